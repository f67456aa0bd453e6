"""lmtune/evaluate/summary.py: the terminal summary of an evaluation, line by line, for a run with
every part, a plain model, few-shot prompts and nothing measured."""

from __future__ import annotations

from lmtune.evaluate.summary import summarize


def _result(**over):
    result = {
        "validation": {"source": "validation split",
                       "tuned": {"loss": 1.23456, "perplexity": 3.4367, "examples": 12},
                       "base": {"loss": 2.5, "perplexity": 12.18249}},
        "task": {"name": "sql", "examples": 20, "source": "sql/test.jsonl", "primary": "execution_accuracy",
                 "metrics": ["execution_accuracy", "valid_sql"],
                 "tuned": {"execution_accuracy": 0.55, "valid_sql": 0.9},
                 "base": {"execution_accuracy": 0.05, "valid_sql": None}},
        "forgetting": {"verdict": "ok", "base_perplexity": 40.04, "tuned_perplexity": 44.96, "ratio": 1.1229,
                       "warn_at": 1.5, "fail_at": 3.0},
        "settings": {"few_shot": 0},
    }
    result.update(over)
    return result


def test_summary_of_a_run_with_every_part():
    assert summarize(_result()).split("\n") == [
        "eval loss 1.2346, perplexity 3.44 on 12 examples [validation split]   (base: loss 2.5000, perplexity 12.18)",
        "task sql: 20 test examples from sql/test.jsonl",
        "  metric                 base    tuned",
        "  execution_accuracy     5.0%    55.0% *",
        "  valid_sql                 -    90.0%",
        "forgetting: ok: general-text perplexity 40.0 -> 45.0 (x1.12; warn > x1.5, forgotten > x3)"]


def test_summary_without_base_loss_with_shots_and_for_a_plain_model():
    r = _result(subject="model", settings={"few_shot": 3}, forgetting=None)
    r["validation"] = {"tuned": {"loss": 1.0, "perplexity": 2.718, "examples": 2}}
    r["task"]["metrics"] = ["execution_accuracy"]
    assert summarize(r).split("\n") == [
        "eval loss 1.0000, perplexity 2.72 on 2 examples []",
        "task sql: 20 test examples from sql/test.jsonl, 3-shot prompts",
        "  metric                model",
        "  execution_accuracy    55.0% *"]
    r = _result(validation=None, settings={"few_shot": 2}, forgetting=None)
    assert summarize(r).split("\n")[0] == "task sql: 20 test examples from sql/test.jsonl, 2-shot prompts"
    r = _result(settings=None, forgetting=None, validation=None)
    r["task"]["base"] = None
    assert summarize(r).split("\n")[1:] == [
        "  metric                 base    tuned", "  execution_accuracy        -    55.0% *", "  valid_sql                 -    90.0%"]


def test_summary_notes_when_nothing_was_measured():
    r = {"validation": None, "validation_note": "no loss measured: none", "task": None, "task_note": "no test prompts"}
    assert summarize(r) == "no loss measured: none\nno test prompts"
    assert summarize({}) == ""
