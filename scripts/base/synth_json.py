"""Generated sentence -> JSON object pairs, with field names unlike the bundled JSON task's.

Teaches the output format (valid JSON, keys in a stated order, strings quoted, numbers bare,
null for what the sentence does not say) and, again, copying entities verbatim.
"""

from __future__ import annotations

import json
import random
from typing import Callable

from . import pools as P

# schema name -> (fields, value makers, sentence templates). A template names the fields it
# mentions; fields a template leaves out become null in the target object.
Schema = tuple[list[str], dict[str, Callable[[random.Random], object]], list[str]]

SCHEMAS: dict[str, Schema] = {
    "event": (["event", "venue_city", "year", "guests"], {
        "event": lambda r: f"{P.title(r)} {r.choice(['Festival', 'Fair', 'Summit', 'Concert'])}",
        "venue_city": P.city, "year": P.year, "guests": lambda r: r.randint(10, 5000)}, [
        "The {event} took place in {venue_city} in {year} and drew {guests} guests.",
        "In {year}, {guests} people attended the {event} in {venue_city}.",
        "{venue_city} hosted the {event} in {year}.",
        "About {guests} guests came to the {event}."]),
    "pet": (["pet_name", "species", "age_years", "owner"], {
        "pet_name": P.made_up_name, "species": lambda r: r.choice(P.ANIMALS),
        "age_years": lambda r: r.randint(1, 19), "owner": P.person}, [
        "{owner} has a {species} called {pet_name} that is {age_years} years old.",
        "{pet_name} is a {age_years}-year-old {species} owned by {owner}.",
        "{pet_name} the {species} lives with {owner}.",
        "My {species} {pet_name} turned {age_years} this year."]),
    "trip": (["traveler", "from_city", "to_city", "month"], {
        "traveler": P.person, "from_city": P.city, "to_city": P.city,
        "month": lambda r: r.choice(P.MONTHS)}, [
        "{traveler} flew from {from_city} to {to_city} in {month}.",
        "In {month}, {traveler} took the train to {to_city}, leaving from {from_city}.",
        "{traveler} will visit {to_city} in {month}.",
        "{traveler} left {from_city} for {to_city}."]),
    "gadget": (["product", "maker", "color", "price_usd"], {
        "product": lambda r: f"{r.choice(P.OBJECTS)} {P.code(r)}", "maker": P.made_up_name,
        "color": lambda r: r.choice(P.COLORS), "price_usd": lambda r: r.randint(5, 2500)}, [
        "The {color} {product} from {maker} costs {price_usd} dollars.",
        "{maker} sells the {product} in {color} for ${price_usd}.",
        "I bought a {color} {product} made by {maker}.",
        "The {product} by {maker} is priced at {price_usd} dollars."]),
    "station": (["station", "temperature_c", "sky", "weekday"], {
        "station": lambda r: P.made_up_name(r) + " Point",
        "temperature_c": lambda r: r.randint(-30, 45),
        "sky": lambda r: r.choice(["sunny", "cloudy", "rainy", "foggy", "snowy", "windy"]),
        "weekday": lambda r: r.choice(P.WEEKDAYS)}, [
        "On {weekday}, {station} reported {temperature_c} degrees and {sky} skies.",
        "It was {sky} at {station} on {weekday}, with {temperature_c} degrees Celsius.",
        "{station} measured {temperature_c} degrees.",
        "The sky over {station} was {sky} on {weekday}."]),
    "novel": (["book_title", "writer", "published", "page_total"], {
        "book_title": P.title, "writer": P.person, "published": P.year,
        "page_total": lambda r: r.randint(60, 1200)}, [
        "{writer} wrote {book_title}, published in {published} with {page_total} pages.",
        "{book_title} ({published}) by {writer} runs to {page_total} pages.",
        "{book_title} is a novel by {writer}.",
        "Published in {published}, {book_title} has {page_total} pages."]),
}


def example(rng: random.Random) -> tuple[str, list[str], str]:
    """(sentence, field names, JSON answer)."""
    name = rng.choice(sorted(SCHEMAS))
    fields, makers, templates = SCHEMAS[name]
    template = rng.choice(templates)
    values = {f: makers[f](rng) for f in fields}
    sentence = template.format(**values)
    obj = {f: (values[f] if "{" + f + "}" in template else None) for f in fields}
    return sentence, fields, json.dumps(obj, ensure_ascii=False)


def document(rng: random.Random) -> dict:
    sentence, fields, answer = example(rng)
    keys = ", ".join(fields)
    instr = rng.choice([f"Extract a JSON object with the keys {keys}. Use null for anything missing.",
                        f"Return JSON with fields {keys}.",
                        f"Fill in this JSON schema from the text: {keys}."])
    if rng.random() < 0.45:
        return {"messages": [{"role": "user", "content": f"{instr}\n\n{sentence}"},
                             {"role": "assistant", "content": answer}]}
    if rng.random() < 0.4:
        return {"text": f"### Instruction:\n{instr}\n\n### Input:\n{sentence}\n\n### Response:\n{answer}"}
    lines = []
    for _ in range(rng.randint(1, 4)):
        lines += [f"Text: {sentence}", f"JSON: {answer}", ""]
        sentence, _, answer = example(rng)
    return {"text": "\n".join(lines).strip()}
