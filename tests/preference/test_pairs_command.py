"""`lmtune pairs`: sample answers from a run, score them with the task metric, write (best, worst)
pairs that `lmtune data check` accepts; refuses to replace a file and writes nothing on bad input."""

from __future__ import annotations

import json

import pytest

from lmtune.cli import main
from lmtune.rl.pairs import pick_pair
from tiny_models import save_tiny_run

# words the tiny tokenizer was trained on: random samples of it share some of them, by chance
REFERENCE = "SELECT name FROM customers WHERE city Berlin ORDER BY name How many orders were placed in 2021"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("pairs"), "lora")


def _prompts(path, n=6):
    path.write_text("".join(json.dumps({"instruction": f"Question {i}?", "output": REFERENCE}) + "\n"
                            for i in range(n)))
    return path


def test_pairs_are_best_and_worst_by_the_task_metric_and_data_check_accepts_them(run, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    argv = ["pairs", str(run), "--data", str(_prompts(tmp_path / "p.jsonl")), "--samples", "4",
            "--out", str(out), "--max-new-tokens", "24", "--task", "generic", "--text-metric", "rouge_l"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows, capsys.readouterr().out
    assert all(r["score_chosen"] > r["score_rejected"] for r in rows)
    assert rows[0]["prompt"] == [{"role": "user", "content": rows[0]["prompt"][0]["content"]}]
    assert main(["data", "check", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"wrote {len(rows)} pairs" in said
    # an existing --out is refused (exit 2, file untouched) unless --overwrite
    before = out.read_text()
    assert main(argv) == 2 and out.read_text() == before
    assert "--out: " in capsys.readouterr().err


def test_with_docs_each_prompt_is_sampled_and_kept_with_its_passage(run, tmp_path, capsys):
    words = ["apples", "rivers", "planets", "violins", "glaciers", "lanterns"]
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": w, "text": f"The {w} live in table t_{w}."}) + "\n" for w in words))
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"instruction": f"Where are the {w}?", "output": REFERENCE}) + "\n"
                               for w in words))
    out = tmp_path / "pairs.jsonl"
    assert main(["pairs", str(run), "--data", str(prompts), "--samples", "4", "--out", str(out),
                 "--max-new-tokens", "24", "--task", "generic", "--text-metric", "rouge_l",
                 "--docs", str(docs), "--top-k", "1"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows, capsys.readouterr().out
    for row in rows:
        content = row["prompt"][-1]["content"]
        word = content.rsplit("Where are the ", 1)[1].rstrip("?")
        assert f"({word}) The {word} live in table t_{word}." in content   # the passage it answered with
    assert main(["data", "check", str(out)]) == 0
    assert main(["pairs", str(run), "--data", str(prompts), "--out", str(tmp_path / "x.jsonl"),
                 "--docs", str(tmp_path / "none.jsonl")]) == 2   # bad docs: refused before sampling
    assert not (tmp_path / "x.jsonl").exists()


def test_bad_prompt_data_stops_before_anything_is_written(run, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "q"}\n')
    out = tmp_path / "pairs.jsonl"
    assert main(["pairs", str(run), "--data", str(bad), "--samples", "2", "--out", str(out)]) == 2
    assert f"{bad}:1" in capsys.readouterr().err and not out.exists()


def test_pick_pair_skips_ties_and_empty_answers():
    assert pick_pair(["a", "b", "c"], [0.5, 1.0, 0.0]) == (1, 2)
    assert pick_pair(["a", "b"], [1.0, 1.0]) is None
    assert pick_pair(["", "b", "c"], [0.0, 1.0, 0.5]) == (1, 2)   # an empty answer is no pair's rejected
    assert pick_pair(["x ", "x"], [1.0, 0.0]) is None              # same text: teaches nothing
