"""Generated question -> SQL pairs over schemas that are NOT the bundled task's.

The point is the skill, not the schema: read a question, copy its entities (names, cities,
years) verbatim into a query of the right shape. Tables here are libraries, sensors, flights,
schools and recipes; the bundled SQL task (customers/orders-style) never appears.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from . import pools as P


@dataclass(frozen=True)
class Col:
    name: str
    kind: str                       # "text" | "num"
    phrase: str                     # how a question names it
    values: Callable[[random.Random], object]


@dataclass(frozen=True)
class Table:
    name: str
    singular: str
    plural: str
    label: Col                      # the column a question usually asks for
    cols: tuple[Col, ...]
    key: str                        # primary key column
    fks: dict[str, str] = field(default_factory=dict)   # column -> parent table


def _pick(pool):
    return lambda rng: rng.choice(pool)


def _num(lo, hi):
    return lambda rng: rng.randint(lo, hi)


GENRES = "mystery poetry history science fantasy travel cooking biography drama".split()
KINDS = "temperature humidity pressure wind noise light".split()
CUISINES = "Italian Thai Mexican Indian Greek Japanese Turkish Ethiopian Peruvian".split()
SUBJECTS = "Algebra Biology Chemistry Drawing Economics Geography Music Physics Poetry".split()

_AUTH_NAME = Col("name", "text", "name", P.person)
_BOOK_TITLE = Col("title", "text", "title", P.title)
_SITE_NAME = Col("site_name", "text", "site name", lambda r: P.made_up_name(r) + " Station")
_SENSOR_CODE = Col("code", "text", "code", P.code)
_AIRPORT_CODE = Col("iata", "text", "code",
                    lambda r: "".join(r.choice("ABCDEFGHIJKLMNOPRSTUVWXYZ") for _ in range(3)))
_FLIGHT_NO = Col("flight_no", "text", "flight number", P.code)
_STUDENT = Col("full_name", "text", "name", P.person)
_COURSE = Col("course_title", "text", "course title", _pick(SUBJECTS))
_DISH = Col("dish", "text", "dish", lambda r: f"{r.choice(P.COLORS)} {r.choice(P.FOODS)}")

TABLES: dict[str, Table] = {t.name: t for t in [
    Table("authors", "author", "authors", _AUTH_NAME, (
        _AUTH_NAME, Col("country", "text", "country", _pick(P.COUNTRIES)),
        Col("birth_year", "num", "birth year", _num(1850, 2000))), "author_id"),
    Table("books", "book", "books", _BOOK_TITLE, (
        _BOOK_TITLE, Col("genre", "text", "genre", _pick(GENRES)),
        Col("pub_year", "num", "publication year", P.year),
        Col("pages", "num", "page count", _num(40, 900))), "book_id", {"author_id": "authors"}),
    Table("sites", "site", "sites", _SITE_NAME, (
        _SITE_NAME, Col("city", "text", "city", P.city)), "site_id"),
    Table("sensors", "sensor", "sensors", _SENSOR_CODE, (
        _SENSOR_CODE, Col("kind", "text", "kind", _pick(KINDS)),
        Col("installed_year", "num", "installation year", _num(1990, 2030))), "sensor_id",
        {"site_id": "sites"}),
    Table("readings", "reading", "readings", Col("value", "num", "value", _num(-40, 120)), (
        Col("value", "num", "value", _num(-40, 120)),
        Col("recorded_year", "num", "year recorded", _num(1995, 2030))), "reading_id",
        {"sensor_id": "sensors"}),
    Table("airports", "airport", "airports", _AIRPORT_CODE, (
        _AIRPORT_CODE, Col("city", "text", "city", P.city),
        Col("country", "text", "country", _pick(P.COUNTRIES))), "airport_id"),
    Table("flights", "flight", "flights", _FLIGHT_NO, (
        _FLIGHT_NO, Col("distance_km", "num", "distance in kilometres", _num(150, 15000)),
        Col("seats", "num", "number of seats", _num(20, 450)),
        Col("year", "num", "year", P.year)), "flight_id", {"origin_id": "airports"}),
    Table("students", "student", "students", _STUDENT, (
        _STUDENT, Col("hometown", "text", "hometown", P.city),
        Col("enrolled_year", "num", "enrollment year", _num(1980, 2030))), "student_id"),
    Table("courses", "course", "courses", _COURSE, (
        _COURSE, Col("teacher", "text", "teacher", P.person),
        Col("credits", "num", "credits", _num(1, 10))), "course_id"),
    Table("recipes", "recipe", "recipes", _DISH, (
        _DISH, Col("cuisine", "text", "cuisine", _pick(CUISINES)),
        Col("minutes", "num", "cooking time in minutes", _num(5, 240)),
        Col("calories", "num", "calories", _num(80, 1500))), "recipe_id"),
]}


# Tables that pretraining NEVER sees: the fine-tuning check (finecheck.py) asks about them, so
# it measures transfer to a new schema, as the bundled task will need, not recall.
CHECK_TABLES: dict[str, Table] = {t.name: t for t in [
    Table("hotels", "hotel", "hotels", Col("hotel_name", "text", "hotel name",
                                           lambda r: P.made_up_name(r) + " Hotel"), (
        Col("hotel_name", "text", "hotel name", lambda r: P.made_up_name(r) + " Hotel"),
        Col("city", "text", "city", P.city), Col("stars", "num", "star rating", _num(1, 5)),
        Col("rooms", "num", "number of rooms", _num(8, 900))), "hotel_id"),
    Table("guests", "guest", "guests", Col("guest_name", "text", "guest name", P.person), (
        Col("guest_name", "text", "guest name", P.person),
        Col("nationality", "text", "nationality", _pick(P.COUNTRIES)),
        Col("visit_year", "num", "visit year", P.year),
        Col("nights", "num", "number of nights", _num(1, 30))), "guest_id", {"hotel_id": "hotels"}),
]}
_ALL = TABLES | CHECK_TABLES


def schema_line(tables: list[Table]) -> str:
    parts = []
    for t in tables:
        cols = [t.key] + [c.name for c in t.cols] + list(t.fks)
        parts.append(f"{t.name}({', '.join(dict.fromkeys(cols))})")
    return "; ".join(parts)


def _pl(word: str) -> str:
    return word + ("es" if word.endswith(("sh", "ch", "s", "x")) else "s")


def _lit(col: Col, value: object) -> str:
    return f"'{value}'" if col.kind == "text" else str(value)


_CMP = [(">", ["greater than", "more than", "above", "over"]),
        ("<", ["less than", "below", "under", "smaller than"]),
        (">=", ["at least", "no less than"]), ("<=", ["at most", "no more than"])]
_YEAR_CMP = [(">", ["after"]), ("<", ["before"])]


def _cond(rng: random.Random, t: Table, avoid: Col | None = None) -> tuple[str, str]:
    """One WHERE condition and its English phrase, e.g. ("pub_year > 1999", "published after 1999")."""
    col = rng.choice([c for c in t.cols if c is not avoid] or list(t.cols))
    v = col.values(rng)
    if col.kind == "text":
        phrase = rng.choice([f"whose {col.phrase} is {v}", f"with {col.phrase} {v}",
                             f"where the {col.phrase} is {v}"])
        return f"{col.name} = {_lit(col, v)}", phrase
    op, words = rng.choice(_YEAR_CMP if "year" in col.name else _CMP)
    return f"{col.name} {op} {v}", f"with {col.phrase} {rng.choice(words)} {v}"


def _q_select(rng, t):
    where, phrase = _cond(rng, t, t.label)
    q = rng.choice([f"List the {t.label.phrase} of {t.plural} {phrase}.",
                    f"Which {t.plural} are there {phrase}? Give the {t.label.phrase}.",
                    f"Show the {t.label.phrase} of every {t.singular} {phrase}.",
                    f"What are the {_pl(t.label.phrase)} of the {t.plural} {phrase}?"])
    return q, f"SELECT {t.label.name} FROM {t.name} WHERE {where}"


def _q_count(rng, t):
    where, phrase = _cond(rng, t)
    q = rng.choice([f"How many {t.plural} are there {phrase}?",
                    f"Count the {t.plural} {phrase}.", f"Number of {t.plural} {phrase}?"])
    return q, f"SELECT COUNT(*) FROM {t.name} WHERE {where}"


def _q_agg(rng, t):
    nums = [c for c in t.cols if c.kind == "num" and "year" not in c.name]
    if not nums:
        return _q_count(rng, t)
    col = rng.choice(nums)
    fn, words = rng.choice([("AVG", "average"), ("MAX", "largest"), ("MIN", "smallest"),
                            ("SUM", "total")])
    where, phrase = _cond(rng, t, col)
    q = rng.choice([f"What is the {words} {col.phrase} of {t.plural} {phrase}?",
                    f"Give the {words} {col.phrase} among {t.plural} {phrase}."])
    return q, f"SELECT {fn}({col.name}) FROM {t.name} WHERE {where}"


def _q_group(rng, t):
    texts = [c for c in t.cols if c.kind == "text" and c is not t.label]
    if not texts:
        return _q_top(rng, t)
    col = rng.choice(texts)
    q = rng.choice([f"For each {col.phrase}, how many {t.plural} are there?",
                    f"Count {t.plural} per {col.phrase}."])
    return q, f"SELECT {col.name}, COUNT(*) FROM {t.name} GROUP BY {col.name}"


def _q_top(rng, t):
    nums = [c for c in t.cols if c.kind == "num"]
    col = rng.choice(nums) if nums else t.label
    k = rng.randint(1, 10)
    desc = rng.random() < 0.6
    word = ("highest" if desc else "lowest") if col.kind == "num" else ("last" if desc else "first")
    q = rng.choice([f"Name the {k} {t.plural} with the {word} {col.phrase}.",
                    f"Top {k} {t.plural} by {col.phrase} ({'descending' if desc else 'ascending'})?"])
    return q, (f"SELECT {t.label.name} FROM {t.name} ORDER BY {col.name} "
               f"{'DESC' if desc else 'ASC'} LIMIT {k}")


def _q_and(rng, t):
    w1, p1 = _cond(rng, t, t.label)
    w2, p2 = _cond(rng, t, t.label)
    if w1.split()[0] == w2.split()[0]:
        return _q_select(rng, t)
    q = f"Find the {t.label.phrase} of {t.plural} {p1} and {p2.replace('whose ', '')}."
    return q, f"SELECT {t.label.name} FROM {t.name} WHERE {w1} AND {w2}"


def _q_join(rng, t):
    if not t.fks:
        return _q_select(rng, t)
    fk, parent_name = rng.choice(sorted(t.fks.items()))
    parent = _ALL[parent_name]
    col = rng.choice(parent.cols)
    v = col.values(rng)
    if col.kind == "num":
        op, words = rng.choice(_YEAR_CMP if "year" in col.name else _CMP)
        cond, phrase = f"{parent.name}.{col.name} {op} {v}", f"{col.phrase} {rng.choice(words)} {v}"
    else:
        cond, phrase = f"{parent.name}.{col.name} = '{v}'", f"{col.phrase} {v}"
    q = rng.choice([f"List the {t.label.phrase} of {t.plural} whose {parent.singular} has {phrase}.",
                    f"Which {t.plural} belong to a {parent.singular} with {phrase}? Give the {t.label.phrase}."])
    sql = (f"SELECT {t.name}.{t.label.name} FROM {t.name} JOIN {parent.name} "
           f"ON {t.name}.{fk} = {parent.name}.{parent.key} WHERE {cond}")
    return q, sql


_SHAPES = [(_q_select, 4), (_q_count, 2), (_q_agg, 2), (_q_group, 1), (_q_top, 1), (_q_and, 2),
           (_q_join, 2)]


def pair(rng: random.Random, t: Table | None = None,
         pool: dict[str, Table] = TABLES) -> tuple[str, str, list[Table]]:
    """One (question, sql, tables involved), about table `t` or a random one from `pool`."""
    t = t or rng.choice(list(pool.values()))
    shape = rng.choices([s for s, _ in _SHAPES], weights=[w for _, w in _SHAPES])[0]
    q, sql = shape(rng, t)
    tables = [t] + [_ALL[p] for p in t.fks.values()]
    return q, sql + ";", tables


_INSTRUCTIONS = ["Write a SQL query that answers the question.",
                 "Translate the question into SQL.", "Answer with a single SQLite query.",
                 "Convert this request to a SQL SELECT statement."]


def document(rng: random.Random) -> dict:
    """A text or chat document holding one or several question/SQL pairs."""
    q, sql, tables = pair(rng)
    schema = f"Tables: {schema_line(tables)}" if rng.random() < 0.6 else ""
    instr = rng.choice(_INSTRUCTIONS)
    style = rng.random()
    if style < 0.4:
        user = "\n".join(x for x in (instr, schema, q) if x)
        return {"messages": [{"role": "user", "content": user},
                             {"role": "assistant", "content": sql}]}
    if style < 0.6:
        inp = "\n".join(x for x in (schema, q) if x)
        return {"text": f"### Instruction:\n{instr}\n\n### Input:\n{inp}\n\n### Response:\n{sql}"}
    lines = [schema] if schema else []
    for _ in range(rng.randint(1, 5)):   # several pairs: in-context copying of the pattern
        lines += [f"Question: {q}", f"SQL: {sql}", ""]
        q, sql, _ = pair(rng, tables[0])
    return {"text": "\n".join(lines).strip()}
