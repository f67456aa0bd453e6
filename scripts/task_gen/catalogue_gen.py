"""Generate the catalogue task: a product catalogue whose facts change after training.

    docs_v1.jsonl   the catalogue at training time: {"id", "text"} per product
    docs_v2.jsonl   the current catalogue: the same products, CHANGED of them with a new price and
                    a new delivery time, plus NEW products that v1 does not have
    train / validation   chat questions about v1 products, answered from v1
    test            questions about the changed and the new products, answered from v2 only

Every answer has one fixed form, "The <product> costs $<price> and ships in <n> days.", so style
(the form) and facts (the two values) are scored apart. A document is key: value lines, so the
values a model has to copy stand alone on their lines. A record's "kind" (v1 | changed | new)
lets the scorer report changed and new facts apart; the data pipeline ignores unknown keys.
"""

from __future__ import annotations

import random

from task_gen.vocab import PRODUCTS

BRANDS = (
    "Acme", "Borealis", "Cobalt", "Delta", "Ember", "Falcon", "Granite", "Harbor", "Iris",
    "Juniper", "Kestrel", "Lumen", "Meridian", "Nimbus", "Orion", "Pioneer", "Quartz", "Ridge",
    "Summit", "Tundra", "Umbra", "Vertex", "Willow", "Zenith",
)
COLOURS = ("black", "white", "grey", "red", "blue", "green", "silver", "yellow")
QUESTIONS = (
    "How much is the {p} and how fast does it ship?",
    "What does the {p} cost, and how long is delivery?",
    "Price and delivery time of the {p}?",
    "I want to buy the {p}. What is the price and when does it ship?",
    "Tell me the price and shipping time for the {p}.",
    "What is the current price of the {p} and its delivery time?",
)
ANSWER = "The {p} costs ${price} and ships in {days} days."
V1_PRODUCTS, CHANGED, NEW = 150, 60, 40
TRAIN_QUESTIONS, TEST_QUESTIONS = 4, 2   # per product; validation takes one more v1 phrasing


def _product(name: str, rng: random.Random) -> dict:
    # days from 2: the answer form says "days"
    return {"name": name, "price": rng.randint(5, 480), "days": rng.randint(2, 14),
            "stock": rng.randint(0, 900), "colour": rng.choice(COLOURS)}


def doc_text(p: dict) -> str:
    return (f"Product: {p['name']}\nPrice: ${p['price']}\nDelivery: {p['days']} days\n"
            f"Stock: {p['stock']} units\nColour: {p['colour']}")


def doc_id(name: str) -> str:
    return name.lower().replace(" ", "-")


def answer(p: dict) -> str:
    return ANSWER.format(p=p["name"], price=p["price"], days=p["days"])


def _changed(p: dict, rng: random.Random) -> dict:
    """A new price and a new delivery time, both different from v1's."""
    new = dict(p)
    while new["price"] == p["price"]:
        new["price"] = max(5, min(480, p["price"] + rng.choice((-1, 1)) * rng.randint(3, 60)))
    while new["days"] == p["days"]:
        new["days"] = rng.randint(2, 14)
    new["stock"] = rng.randint(0, 900)
    return new


def _record(question: str, p: dict, kind: str) -> dict:
    return {"messages": [{"role": "user", "content": question},
                         {"role": "assistant", "content": answer(p)}], "kind": kind}


def generate(rng: random.Random) -> dict[str, list[dict]]:
    """{docs_v1, docs_v2, train, validation, test}: lists of records."""
    items = [item for group in PRODUCTS.values() for item in group]
    names = sorted({f"{b} {i}" for b in BRANDS for i in items})
    rng.shuffle(names)
    v1 = [_product(n, rng) for n in names[:V1_PRODUCTS]]
    changed_names = {p["name"] for p in rng.sample(v1, CHANGED)}
    v2 = [_changed(p, rng) if p["name"] in changed_names else p for p in v1]
    new = [_product(n, rng) for n in names[V1_PRODUCTS:V1_PRODUCTS + NEW]]
    v2 += new

    train, val, test = [], [], []
    for p in v1:
        phrasings = rng.sample(QUESTIONS, TRAIN_QUESTIONS + 1)
        train += [_record(q.format(p=p["name"]), p, "v1") for q in phrasings[:TRAIN_QUESTIONS]]
        val.append(_record(phrasings[-1].format(p=p["name"]), p, "v1"))
    for p in v2:
        kind = "new" if p in new else "changed" if p["name"] in changed_names else None
        if kind:
            test += [_record(q.format(p=p["name"]), p, kind) for q in rng.sample(QUESTIONS, TEST_QUESTIONS)]
    rng.shuffle(train)
    rng.shuffle(test)
    return {
        "docs_v1": [{"id": doc_id(p["name"]), "text": doc_text(p)} for p in v1],
        "docs_v2": [{"id": doc_id(p["name"]), "text": doc_text(p)} for p in v2],
        "train": train, "validation": val, "test": test,
    }
