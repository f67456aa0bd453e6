"""JSON-extraction metrics.

- valid_json: the answer parses as a JSON object ({...}); arrays, numbers or broken text do not.
- field_accuracy: share of the reference's fields whose value is exactly right (same JSON type:
  34 and "34" differ, null must be null); an invalid answer gets 0 on every field.
- exact_match: the object equals the reference (same keys, same values, no extra keys).
"""

from __future__ import annotations

import json

from lmtune.tasks.base import Task, check_lengths

_DECODER = json.JSONDecoder()


def extract_json(generated_text: str) -> str:
    """The first complete JSON object in the text, exactly as written; if there is none, the first
    line from the first '{' (so that it scores as invalid JSON)."""
    text = generated_text.strip()
    start = text.find("{")
    while start != -1:
        try:
            _, end = _DECODER.raw_decode(text, start)
            return text[start:end]
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
    first = text.find("{")
    return text[first:].split("\n", 1)[0].strip() if first != -1 else text.split("\n", 1)[0].strip()


def parse_object(text: str) -> dict | None:
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def same_value(a, b) -> bool:
    """Equal and of the same JSON type (True is not 1, 2.0 is not 2)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


def score_one(prediction: str, reference: dict) -> dict[str, float]:
    pred = parse_object((prediction or "").strip())
    if pred is None:
        return {"valid_json": 0.0, "field_accuracy": 0.0, "exact_match": 0.0}
    right = sum(1 for k, v in reference.items() if k in pred and same_value(pred[k], v))
    return {
        "valid_json": 1.0,
        "field_accuracy": right / len(reference) if reference else float(not pred),
        "exact_match": float(same_value(pred, reference)),
    }


class JsonTask(Task):
    """Sentence -> JSON object with a fixed schema (references: chat records or JSON strings)."""

    def __init__(self, files: dict, name: str = "json", description: str = ""):
        super().__init__(name=name, format="chat", files=dict(files), description=description,
                         metrics=("valid_json", "field_accuracy", "exact_match"))

    def extract_answer(self, generated_text: str) -> str:
        return extract_json(generated_text)

    def score_examples(self, predictions: list[str], references: list[dict | str]) -> list[dict[str, float]]:
        check_lengths(predictions, references)
        out = []
        for i, (pred, ref) in enumerate(zip(predictions, references)):
            gold = parse_object(self.reference(ref))
            if gold is None:
                raise ValueError(f"reference {i} is not a JSON object: {self.reference(ref)!r}")
            out.append(score_one(pred, gold))
        return out
