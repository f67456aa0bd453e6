"""Generate the text-to-SQL examples: sample a template and slot values, run the gold query, keep
it only if it is a fair test, deduplicate, split.

Fair means (each rule closes a way an earlier version of this task could be gamed):
- the gold query returns 1..MAX_ROWS rows with at least one non-NULL, non-zero value, and not
  just the single value 1, so an empty or do-nothing prediction (`SELECT 1`) can never match it;
- its result does not depend on SQLite's arbitrary row order (ties under ORDER BY ... LIMIT):
  checked by re-running it with the ties broken both ways (or, without ORDER BY, with
  `PRAGMA reverse_unordered_selects`);
- every gold SQL string occurs once in the whole task, and so does every question, so no test
  question (or a paraphrase of it with the same answer) is in train.
"""

from __future__ import annotations

import random
import re
import sqlite3
import string
from collections import Counter
from pathlib import Path

from task_gen.sql_db import SCHEMA, YEARS
from task_gen.sql_templates import TEMPLATES, Template

MAX_ROWS = 30
_ORDER = re.compile(r" ORDER BY (.+?)(?= LIMIT \d+$|$)")
MAX_FAILS = 300  # consecutive rejects after which a template counts as exhausted


def _slot_names(t: Template) -> set[str]:
    fields = set()
    for text in (t.sql, *t.questions):
        fields |= {f for _, f, _, _ in string.Formatter().parse(text) if f}
    return fields


def _pools(rows: dict[str, list[tuple]]) -> dict[str, list]:
    return {
        "city": [r[0] for r in rows["cities"]],
        "country": sorted({r[1] for r in rows["cities"]}),
        "customer": [r[1] for r in rows["customers"]],
        "product": [r[1] for r in rows["products"]],
        "category": sorted({r[2] for r in rows["products"]}),
        # thresholds just above a real price: the filter cuts inside the data, not beyond it
        "price": sorted({(r[3] // 10 + 1) * 10 for r in rows["products"]}),
    }


def _sample_slots(names: set[str], pools: dict[str, list], rng: random.Random) -> dict:
    slots: dict = {}
    for name in sorted(names):  # sorted: the draw order must not depend on set order
        if name in pools:
            slots[name] = rng.choice(pools[name])
        elif name == "year":
            slots[name] = rng.choice(YEARS)
        elif name == "age":
            slots[name] = rng.randint(20, 70)
        elif name == "old":
            slots[name] = rng.randint(64, 78)
        elif name == "young":
            slots[name] = rng.randint(19, 26)
        elif name == "n":
            slots[name] = rng.randint(2, 5)
        elif name == "k":
            slots[name] = rng.randint(5, 11)
    if "age_hi" in names:
        slots["age_hi"] = slots["age"] + rng.randint(2, 10)
    return slots


def _run(conn: sqlite3.Connection, sql: str, reverse: bool = False) -> tuple[list[tuple], int]:
    conn.execute(f"PRAGMA reverse_unordered_selects = {int(reverse)}")
    cursor = conn.execute(sql)
    return cursor.fetchall(), len(cursor.description)


def _tie_broken(sql: str, n_cols: int, direction: str) -> str:
    """`sql` with every output column appended to its ORDER BY as a tie-breaker."""
    m = _ORDER.search(sql)
    extra = ", ".join(f"{i}{direction}" for i in range(1, n_cols + 1))
    return f"{sql[:m.end(1)]}, {extra}{sql[m.end(1):]}"


def is_fair(conn: sqlite3.Connection, sql: str) -> bool:
    """True when `sql` returns a small, non-trivial result that does not depend on row order."""
    rows, n_cols = _run(conn, sql)
    if not 1 <= len(rows) <= MAX_ROWS:
        return False
    if all(v is None or v == 0 for row in rows for v in row):
        return False
    if rows == [(1,)]:  # `SELECT 1` would match it: a probe query must not score
        return False
    if _ORDER.search(sql):
        # ties under ORDER BY (... LIMIT) leave the order/the rows to chance: breaking the ties
        # both ways must not change the result (reverse_unordered_selects ignores ORDER BY)
        return all(_run(conn, _tie_broken(sql, n_cols, d))[0] == rows for d in ("", " DESC"))
    # without ORDER BY the rows are compared as a multiset; a reversed scan must not change it
    return Counter(rows) == Counter(_run(conn, sql, reverse=True)[0])


def generate(db_path: Path, rows: dict[str, list[tuple]], total: int,
             rng: random.Random) -> list[dict[str, str]]:
    """`total` unique, fair alpaca records (instruction=question, input=schema, output=SQL)."""
    pools = _pools(rows)
    active = list(TEMPLATES)
    fails = Counter()
    seen_sql: set[str] = set()
    seen_q: set[str] = set()
    out: list[dict[str, str]] = []
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        while len(out) < total:
            if not active:
                raise RuntimeError(f"templates exhausted after {len(out)} of {total} examples")
            t = rng.choice(active)
            slots = _sample_slots(_slot_names(t), pools, rng)
            sql = t.sql.format(**slots)
            question = rng.choice(t.questions).format(**slots)
            qkey = " ".join(question.lower().split())
            if sql in seen_sql or qkey in seen_q or not is_fair(conn, sql):
                fails[t.name] += 1
                if fails[t.name] >= MAX_FAILS:
                    active.remove(t)
                continue
            fails[t.name] = 0
            seen_sql.add(sql)
            seen_q.add(qkey)
            out.append({"instruction": question, "input": SCHEMA, "output": sql})
    finally:
        conn.close()
    return out
