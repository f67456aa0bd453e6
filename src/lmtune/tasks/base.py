"""What every task offers the evaluator: its files, its record format, how to cut the answer out
of generated text, and how to score answers against reference records."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


def reference_text(record: dict | str) -> str:
    """The target answer of a record in any supported format (or a plain string as is)."""
    if isinstance(record, str):
        return record
    if "messages" in record:
        turns = [m for m in record["messages"] if m.get("role") == "assistant"]
        if not turns:
            raise ValueError("chat record without an assistant message: nothing to compare with")
        return str(turns[-1].get("content", ""))
    for key in ("output", "completion", "response", "answer", "text"):
        if key in record:
            return str(record[key])
    raise ValueError(f"cannot find the reference answer in a record with keys {sorted(record)}; "
                     "expected output (alpaca), completion, messages (chat) or text")


def mean_scores(rows: list[dict[str, float]], keys: tuple[str, ...]) -> dict[str, float]:
    """Average per-example scores; an empty list scores 0 on every key."""
    if not rows:
        return {k: 0.0 for k in keys}
    return {k: sum(r[k] for r in rows) / len(rows) for k in keys}


def check_lengths(predictions: list, references: list) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references; "
                         "give one prediction per reference, in the same order")


@dataclass
class Task:
    """Base class. Subclasses set `metrics` and implement `score_examples` / `extract_answer`."""

    name: str
    format: str  # record format of the files: alpaca | chat | text | auto
    files: dict[str, Path] = field(default_factory=dict)
    description: str = ""
    metrics: tuple[str, ...] = ()

    def reference(self, record: dict | str) -> str:
        return reference_text(record)

    def extract_answer(self, generated_text: str) -> str:
        return generated_text.strip()

    def score_examples(self, predictions: list[str], references: list[dict | str]) -> list[dict[str, float]]:
        raise NotImplementedError

    def credit(self, predictions: list[str], references: list[dict | str], metric: str | None = None) -> list[float]:
        """One number in [0, 1] per answer, for a reward (grpo, `lmtune pairs`): the per-example
        `metric` (default: the task's first). Tasks with a finer-grained notion of partly right
        (SQL: overlapping result rows) override it."""
        key = metric or self.metrics[0]
        return [row[key] for row in self.score_examples(predictions, references)]

    def score(self, predictions: list[str], references: list[dict | str]) -> dict[str, float]:
        """Mean of each metric over the examples. `predictions` are already-extracted answers
        (see `extract_answer`), one per reference record, in order."""
        return mean_scores(self.score_examples(predictions, references), self.metrics)
