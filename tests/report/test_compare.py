"""`lmtune compare`: the table's numbers (% of full above all), its three renderings, and the notes
for runs that cannot be compared. Fabricated run directories pin exact numbers; the real runs
trained in test_eval check that real run directories read correctly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmtune.cli import main
from lmtune.report.compare import compare, to_html, to_markdown, to_text
from lmtune.config import from_dict


def fabricate_run(path: Path, method: str, metric: float | None = 0.8, task: str = "sql",
                  ratio: float = 1.1, metrics_rows: int = 12) -> Path:
    """A run directory with the files `lmtune train` + `lmtune eval` write, numbers chosen by hand."""
    path.mkdir(parents=True)
    (path / "config.yaml").write_text(from_dict({"data": {"task": "sql"}, "method": method}).to_yaml())
    trainable = 5_000_000 if method == "full" else 100_000
    (path / "train_summary.json").write_text(json.dumps({
        "method": method, "trainable_params": trainable, "total_params": 5_000_000, "train_seconds": 123.4,
        "global_step": metrics_rows, "peak_memory_mb": {"full": 2048.0, "lora": 900.0, "qlora": 600.0}[method],
        "eval_loss": 0.95}))
    rows = [{"step": s, "loss": 3.0 / s, "learning_rate": 2e-4 * (1 - s / (metrics_rows + 1)), "grad_norm": 1.0}
            for s in range(1, metrics_rows + 1)]
    rows += [{"step": metrics_rows, "eval_loss": 0.9, "eval_perplexity": 2.46}]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if metric is None:
        return path
    primary = {"sql": "execution_accuracy", "json": "field_accuracy"}[task]
    verdict = "ok" if ratio <= 1.5 else ("warning" if ratio <= 3 else "forgotten")
    (path / "eval.json").write_text(json.dumps({
        "run": str(path), "method": method, "evaluated_at": "2026-11-28T16:00:00+00:00",
        "settings": {"max_new_tokens": 64},
        "validation": {"source": "validation split", "tuned": {"loss": 0.9, "perplexity": 2.46, "tokens": 900, "examples": 20},
                       "base": {"loss": 3.1, "perplexity": 22.2, "tokens": 900, "examples": 20}},
        "task": {"name": task, "source": f"{task}/test.jsonl", "examples": 20, "primary": primary,
                 "metrics": [primary, "exact_match"], "tuned": {primary: metric, "exact_match": metric / 2},
                 "base": {primary: 0.05, "exact_match": 0.0}},
        "forgetting": {"base_perplexity": 40.0, "tuned_perplexity": 40.0 * ratio, "ratio": ratio, "verdict": verdict,
                       "warn_at": 1.5, "fail_at": 3.0, "passages": 160, "tokens": 9000, "probe": "general/probe.jsonl"},
        "samples": [{"index": 0, "prompt": "Which customers live in <b>Oslo</b>?", "reference": "SELECT 1",
                     "tuned": "SELECT 1", "tuned_scores": {primary: 1.0}, "base": "the the",
                     "base_scores": {primary: 0.0}}]}))
    return path


@pytest.fixture
def three(tmp_path):
    return [fabricate_run(tmp_path / "full", "full", 0.80, ratio=5.0),
            fabricate_run(tmp_path / "lora", "lora", 0.76, ratio=1.1),
            fabricate_run(tmp_path / "qlora", "qlora", 0.74, ratio=1.75)]


def test_percent_of_full(three):
    rows, notes = compare(three)
    assert [r.method for r in rows] == ["full", "lora", "qlora"]
    assert [round(r.pct_of_full, 2) for r in rows] == [100.0, 95.0, 92.5]
    assert [r.forgetting for r in rows] == ["forgotten", "ok", "warning"]
    assert rows[1].trainable_params == 100_000 and rows[0].peak_memory_mb == 2048.0
    assert notes == []


def test_three_renderings_agree(three):
    rows, notes = compare(three)
    text, md, page = to_text(rows, notes), to_markdown(rows, notes), to_html(rows, notes)
    for out in (text, md, page):
        assert "execution_accuracy" in out and "95.0%" in out and "92.5%" in out
        assert "2.00 GB" in out and "2 min 3 s" in out and "100.00k (2.0%)" in out
    lines = md.strip().splitlines()
    assert lines[0].startswith("| run | method | trainable params") and len(lines) == 5
    assert page.startswith("<!DOCTYPE html>") and page.count("<tr>") == 4


def test_cli_writes_markdown_and_html(three, tmp_path, capsys):
    md, page = tmp_path / "out" / "cmp.md", tmp_path / "cmp.html"
    assert main(["compare", *map(str, three), "--markdown", str(md), "--html", str(page)]) == 0
    out = capsys.readouterr().out
    assert "95.0%" in out and f"wrote {md}" in out
    assert "| lora | lora |" in md.read_text() and "<table>" in page.read_text()


def test_notes_for_runs_that_do_not_compare(tmp_path):
    a = fabricate_run(tmp_path / "a", "lora", 0.5)
    b = fabricate_run(tmp_path / "b", "qlora", 0.6, task="json")
    c = fabricate_run(tmp_path / "c", "lora", None)          # trained, never evaluated
    rows, notes = compare([a, b, c])
    assert all(r.pct_of_full is None for r in rows)
    assert any("no full fine-tuning run" in n for n in notes)
    assert any("different tasks" in n for n in notes)
    assert any(n.startswith(f"{c.name}: no task metric") for n in notes)
    assert "task metric" in to_text(rows, notes)              # mixed metrics: generic header
    full_zero = fabricate_run(tmp_path / "z", "full", 0.0)
    rows, notes = compare([full_zero, a])
    assert rows[1].pct_of_full is None and any("scored 0" in n for n in notes)


def test_same_names_show_paths_and_bad_input_is_a_user_error(tmp_path, capsys):
    a = fabricate_run(tmp_path / "x" / "run", "full")
    b = fabricate_run(tmp_path / "y" / "run", "lora", 0.4)
    rows, _ = compare([a, b])
    assert rows[0].run == str(a) and rows[1].pct_of_full == pytest.approx(50.0)
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_real_runs(tmp_path_factory):
    from eval_runs import trained_runs

    runs = trained_runs(tmp_path_factory)
    rows, notes = compare([runs["harsh"], runs["gentle"]])
    full, lora = rows
    assert (full.method, lora.method) == ("full", "lora")
    assert full.trainable_params == full.total_params > lora.trainable_params > 0
    assert full.forgetting == "forgotten" and lora.forgetting == "ok"
    assert (full.metric, lora.metric) == ("rouge_l", "execution_accuracy")
    assert any("different tasks" in n for n in notes)         # generic vs sql: no % across them
    assert full.train_seconds > 0 and full.eval_loss is not None
