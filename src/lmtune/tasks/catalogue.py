"""Catalogue metrics: questions about products whose price and delivery time change after training.

Every answer has one trained form, "The <product> costs $<price> and ships in <n> days.":
- exact_match: the answer equals the reference (whitespace collapsed);
- style: the answer has the trained form (whatever product and values it names);
- fact_accuracy: share of the two facts (price, delivery days) right, read from an answer in the
  trained form for the right product; an answer in another form or about another product gets 0.
"""

from __future__ import annotations

import re

from lmtune.tasks.base import Task, check_lengths

ANSWER_FORM = re.compile(r"The (?P<product>.+?) costs \$(?P<price>\d+) and ships in (?P<days>\d+) days\.")


def _norm(text: str) -> str:
    return " ".join((text or "").split())


def score_one(prediction: str, reference: str) -> dict[str, float]:
    pred, gold = _norm(prediction), _norm(reference)
    got, want = ANSWER_FORM.fullmatch(pred), ANSWER_FORM.fullmatch(gold)
    if want is None:
        raise ValueError(f"reference is not in the catalogue answer form: {reference!r}")
    facts = 0.0
    if got is not None and got["product"] == want["product"]:
        facts = ((got["price"] == want["price"]) + (got["days"] == want["days"])) / 2
    return {"exact_match": float(pred == gold), "style": float(got is not None), "fact_accuracy": facts}


class CatalogueTask(Task):
    """Chat questions about a product catalogue; the docs (docs_v1 at training, docs_v2 now) are
    in `files` for retrieval."""

    def __init__(self, files: dict, name: str = "catalogue", description: str = ""):
        super().__init__(name=name, format="chat", files=dict(files), description=description,
                         metrics=("exact_match", "style", "fact_accuracy"))

    def extract_answer(self, generated_text: str) -> str:
        """The first non-empty line: the trained answer is one sentence."""
        lines = [line.strip() for line in (generated_text or "").strip().splitlines() if line.strip()]
        return lines[0] if lines else ""

    def score_examples(self, predictions: list[str], references: list[dict | str]) -> list[dict[str, float]]:
        check_lengths(predictions, references)
        return [score_one(pred, self.reference(ref)) for pred, ref in zip(predictions, references)]
