"""Scores for generated answers, through the bundled tasks' scorers (lmtune.tasks): SQL execution
accuracy, JSON validity and field accuracy, and for a user's own data the `generic` task (exact
match and ROUGE-L from Google's `rouge-score` package).

A Scores object carries the mean of each metric, the per-example rows, and the name of the metric
that counts (`primary`), so reports and `lmtune compare` know which number to put first.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmtune.tasks import get_task
from lmtune.tasks.base import mean_scores

# The metric that answers "did it learn the task?" when the task does not name one itself.
PRIMARY = {"sql": "execution_accuracy", "json": "field_accuracy", "catalogue": "exact_match",
           "generic": "rouge_l"}


@dataclass
class Scores:
    primary: str
    values: dict[str, float] = field(default_factory=dict)
    per_example: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"primary": self.primary, **self.values}


def get_scorer(task_name: str | None):
    """The bundled task's scorer, or `generic` for a user's own data."""
    return get_task(task_name or "generic")


def primary_metric(task) -> str:
    return getattr(task, "primary_metric", None) or PRIMARY.get(task.name) or task.metrics[0]


def score(task, generations: list[str], references: list) -> tuple[list[str], Scores]:
    """Cut each answer out of its generated text, score it; returns (answers, scores)."""
    answers = [task.extract_answer(g) for g in generations]
    rows = task.score_examples(answers, references)
    return answers, Scores(primary_metric(task), mean_scores(rows, task.metrics), rows)
