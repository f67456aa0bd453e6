"""lmtune/evaluate/metrics.py: the scorer and headline metric per task, and scoring that extracts
answers then averages each metric."""

from __future__ import annotations

from lmtune.evaluate.metrics import Scores, get_scorer, primary_metric, score


def test_scorer_and_primary_metric_per_task():
    assert get_scorer(None).name == "generic" and get_scorer("sql").name == "sql"
    assert [primary_metric(get_scorer(t)) for t in ("sql", "json", None)] == [
        "execution_accuracy", "field_accuracy", "rouge_l"]

    class Own:
        name, metrics, primary_metric = "own", ("a", "b"), "b"

    assert primary_metric(Own()) == "b"
    Own.primary_metric = None
    assert primary_metric(Own()) == "a"
    Own.name = "sql"
    assert primary_metric(Own()) == "execution_accuracy"


def test_score_extracts_answers_then_averages_each_metric():
    task = get_scorer("generic")
    answers, scores = score(task, ["  Berlin \n", "Paris"], ["Berlin", {"output": "Rome"}])
    assert answers == ["Berlin", "Paris"]
    assert scores.primary == "rouge_l" and list(scores.values) == list(task.metrics)
    assert scores.values["exact_match"] == 0.5 and scores.values["rouge_l"] == 0.5
    assert [r["exact_match"] for r in scores.per_example] == [1.0, 0.0]
    assert scores.to_dict() == {"primary": "rouge_l", **scores.values}
    assert Scores("x").to_dict() == {"primary": "x"} and Scores("x").per_example == []
