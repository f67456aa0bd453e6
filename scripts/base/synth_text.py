"""Generated plain English and copying exercises.

Prose: short paragraphs from sentence templates over broad word pools, so common English words
are frequent enough to become whole tokens and the model sees ordinary grammar (stdlib
docstrings alone are technical English). Copying: facts restated, records reordered, lists
reversed, questions answered from a context: the skill a fine-tune needs most, because the
answers of the bundled tasks are mostly entities copied from the prompt.
"""

from __future__ import annotations

import json
import random

from . import pools as P

_SENTENCES = [
    "{name} works as a {job} in {city}.",
    "Every {weekday}, {first} walks to the {place} and buys some {food}.",
    "In {year}, {first} moved to {city} with a {adj} {animal}.",
    "The {place} near {poss} home is {adj} in the morning and {adj2} at night.",
    "{first} keeps a {color} {object} on the desk because it is a gift from {name2}.",
    "When it rains, {first} reads at the {place} until the evening.",
    "People in {city} say the {food} there is the best in {country}.",
    "{first} has {num} friends who also work as {job}s.",
    "On {month} {day}, {first} met an old friend, {name2}, at the {place}.",
    "They talked about work, the weather and the price of {food}.",
    "Later, {name2} sent {first} a letter from {city2}.",
    "The letter said that the {place} in {city2} was {adj} and full of visitors.",
    "{first} thinks a {adj} {object} is better than a {adj2} one.",
    "Last {month}, the {place} in {city} closed for repairs.",
    "Nobody knew why the {color} {object} was left outside the {place}.",
    "{first} asked {name2} to help carry the {object} up the stairs.",
    "It took {num} minutes to walk from the {place} to the {place2}.",
    "{pron_cap} likes to cook {food} for friends on {weekday} evenings.",
    "Before {year2}, the town of {city} had only one {place}.",
    "The {job} explained the plan slowly, and everyone listened.",
    "If the train is late, {first} will take a bus to {city2}.",
    "{first} learned to play the guitar at the age of {age}.",
    "A {adj} wind came from the sea, and the {animal} hid under the {object}.",
    "Most mornings start with {food} and a cup of tea.",
    "The answer was simple, but it took {first} a long time to see it.",
    "{name2} is {age} years old and still works at the {place}.",
    "After the meeting, they went to a {adj} cafe in {city}.",
    "{first} wrote the date, {month} {day}, {year}, at the top of the page.",
    "There are {num} {animal}s on the farm outside {city}.",
    "Some people prefer {food}, while others would rather have {food2}.",
]


def _slots(rng: random.Random) -> dict:
    name, name2 = P.person(rng), P.person(rng)
    he = rng.random() < 0.5
    return {
        "name": name, "first": name.split()[0], "name2": name2, "city": P.city(rng),
        "city2": rng.choice(P.CITIES), "country": rng.choice(P.COUNTRIES),
        "job": rng.choice(P.JOBS), "place": rng.choice(P.PLACES), "place2": rng.choice(P.PLACES),
        "food": rng.choice(P.FOODS), "food2": rng.choice(P.FOODS), "object": rng.choice(P.OBJECTS),
        "adj": rng.choice(P.ADJECTIVES), "adj2": rng.choice(P.ADJECTIVES),
        "color": rng.choice(P.COLORS), "animal": rng.choice(P.ANIMALS),
        "month": rng.choice(P.MONTHS), "weekday": rng.choice(P.WEEKDAYS),
        "day": rng.randint(1, 28), "year": P.year(rng), "year2": P.year(rng),
        "num": rng.randint(2, 60), "age": rng.randint(5, 90),
        "pron_cap": "He" if he else "She", "poss": "his" if he else "her",
    }


def paragraph(rng: random.Random, slots: dict | None = None) -> str:
    slots = slots or _slots(rng)
    first = rng.choice(_SENTENCES[:3])
    rest = rng.sample(_SENTENCES, rng.randint(3, 7))
    return " ".join(s.format(**slots) for s in [first] + rest)


def _qa(rng: random.Random) -> tuple[str, str, str]:
    """(context, question, answer) where the answer is copied from the context."""
    s = _slots(rng)
    context = paragraph(rng, s)
    asks = [("Where does {first} work?", "{city}", "{name} works as a {job} in {city}."),
            ("What is {first}'s job?", "{job}", "{name} works as a {job} in {city}."),
            ("What is {first}'s full name?", "{name}", "{name} works as a {job} in {city}."),
            ("In which year did {first} move?", "{year}", "In {year}, {first} moved to {city} with a {adj} {animal}."),
            ("Where did {first} move?", "{city}", "In {year}, {first} moved to {city} with a {adj} {animal}.")]
    q, a, needed = rng.choice(asks)
    if needed.format(**s) not in context:
        context = needed.format(**s) + " " + context
    return context, q.format(**s), a.format(**s)


def _record(rng: random.Random) -> dict:
    keys = rng.sample(["name", "city", "year", "color", "code", "pet", "job", "item",
                       P.made_up_word(rng), "country", "month", "count"], rng.randint(3, 6))
    makers = {"name": P.person, "city": P.city, "year": P.year, "code": P.code,
              "color": lambda r: r.choice(P.COLORS), "pet": lambda r: r.choice(P.ANIMALS),
              "job": lambda r: r.choice(P.JOBS), "item": lambda r: r.choice(P.OBJECTS),
              "country": lambda r: r.choice(P.COUNTRIES), "month": lambda r: r.choice(P.MONTHS),
              "count": lambda r: r.randint(0, 9999)}
    return {k: makers.get(k, P.made_up_word)(rng) for k in keys}


def _copy_exercise(rng: random.Random) -> tuple[str, str]:
    """(prompt, answer) for one copying exercise."""
    kind = rng.randrange(6)
    if kind == 0:
        items = [rng.choice([P.person(rng), P.city(rng), P.code(rng), str(P.year(rng)),
                             P.made_up_word(rng)]) for _ in range(rng.randint(1, 5))]
        text = ", ".join(items)
        return f"Repeat exactly: {text}", text
    if kind == 1:
        rec = _record(rng)
        keys = list(rec)
        rng.shuffle(keys)
        src = "\n".join(f"{k}: {v}" for k, v in rec.items())
        return (f"{src}\n\nList the same fields in this order: {', '.join(keys)}.",
                "\n".join(f"{k}: {rec[k]}" for k in keys))
    if kind == 2:
        rec = _record(rng)
        src = "; ".join(f"{k} = {v}" for k, v in rec.items())
        return f"Write as JSON: {src}", json.dumps(rec, ensure_ascii=False)
    if kind == 3:
        items = rng.sample(P.CITIES + P.FIRST_NAMES + P.COUNTRIES, rng.randint(3, 7))
        op = rng.choice(["reverse", "sort"])
        out = items[::-1] if op == "reverse" else sorted(items)
        what = "in reverse order" if op == "reverse" else "in alphabetical order"
        return f"Write these {what}: {', '.join(items)}", ", ".join(out)
    if kind == 4:
        rec = _record(rng)
        k = rng.choice(list(rec))
        src = "\n".join(f"{kk}: {v}" for kk, v in rec.items())
        return f"{src}\n\nWhat is the {k}?", str(rec[k])
    context, q, a = _qa(rng)
    return f"{context}\n\n{q}", a


def document(rng: random.Random) -> dict:
    """Prose, or a copying exercise as text or chat."""
    r = rng.random()
    if r < 0.35:
        return {"text": "\n\n".join(paragraph(rng) for _ in range(rng.randint(1, 4)))}
    prompt, answer = _copy_exercise(rng)
    if r < 0.7:
        return {"messages": [{"role": "user", "content": prompt},
                             {"role": "assistant", "content": answer}]}
    return {"text": f"{prompt}\nAnswer: {answer}"}
