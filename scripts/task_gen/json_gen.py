"""Generate the JSON-extraction examples: a sentence describing an order in, a JSON object with a
fixed schema out, as chat `messages` (system states the schema, user = sentence, assistant = JSON).

Values are copied verbatim from the sentence (name, city, item, digits); a field the sentence does
not mention is null. Every sentence and every answer object occurs once in the whole task.
"""

from __future__ import annotations

import json
import random

from task_gen.vocab import CITIES, CONTAINERS, FIRST_NAMES, ITEMS, LAST_NAMES

FIELDS = ("name", "age", "city", "product", "quantity")
SYSTEM = ('Extract the order as a JSON object with the keys "name", "age", "city", "product" and '
          '"quantity". Use null for anything the message does not say. Reply with the JSON only.')

# Each template mentions name, product and quantity; some leave out age or city (-> null).
SENTENCES = (
    "{name}, {age}, from {city} ordered {qty} {box} of {item}.",
    "{name} ({age}) from {city} wants {qty} {box} of {item}.",
    "Please send {qty} {box} of {item} to {name} in {city}.",
    "A {age}-year-old customer named {name} asked for {qty} {box} of {item}.",
    "{name} lives in {city} and ordered {qty} {box} of {item}.",
    "New order: {qty} {box} of {item} for {name}, aged {age}, shipping to {city}.",
    "{name} bought {qty} {box} of {item} yesterday.",
    "Customer {name} from {city}, age {age}, needs {qty} {box} of {item}.",
    "Order {qty} {box} of {item} for {name}.",
    "{name} is {age} years old and would like {qty} {box} of {item}.",
    "From {city}: {name} requested {qty} {box} of {item}.",
    "Could you ship {qty} {box} of {item} to {city}? It is for {name}, who is {age}.",
    "{name} in {city} placed an order for {qty} {box} of {item}.",
    "I am {name}, {age}, and I need {qty} {box} of {item} delivered to {city}.",
)


def _example(rng: random.Random) -> tuple[str, str]:
    template = rng.choice(SENTENCES)
    name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
    age = rng.randint(18, 85)
    city = rng.choice(sorted(CITIES))
    item = rng.choice(ITEMS)
    qty = rng.randint(2, 24)  # >= 2: the container is always plural
    sentence = template.format(name=name, age=age, city=city, item=item, qty=qty,
                               box=rng.choice(CONTAINERS))
    answer = {
        "name": name,
        "age": age if "{age}" in template else None,
        "city": city if "{city}" in template else None,
        "product": item,
        "quantity": qty,
    }
    return sentence, json.dumps(answer, ensure_ascii=False)  # one line, ", " and ": " separators


def generate(total: int, rng: random.Random) -> list[dict]:
    """`total` unique chat records."""
    seen_s: set[str] = set()
    seen_a: set[str] = set()
    out: list[dict] = []
    while len(out) < total:
        sentence, answer = _example(rng)
        if sentence in seen_s or answer in seen_a:
            continue
        seen_s.add(sentence)
        seen_a.add(answer)
        out.append({"messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": sentence},
            {"role": "assistant", "content": answer},
        ]})
    return out
