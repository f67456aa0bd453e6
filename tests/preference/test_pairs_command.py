"""`lmtune pairs`: sample answers from a run, score them with the task metric, write (best, worst)
pairs that `lmtune data check` accepts; refuses to replace a file and writes nothing on bad input."""

from __future__ import annotations

import json

import pytest

from lmtune.cli import main
from lmtune.rl.pairs import GREEDY, SAMPLE, cut_at_mistake, pick_pair
from lmtune.rl.pairs import REFERENCE as FROM_REFERENCE
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


def test_pick_pair_prefers_the_runs_own_chosen_and_its_greedy_or_most_frequent_mistake():
    S, G, R = SAMPLE, GREEDY, FROM_REFERENCE
    # chosen: a right sample before the (equally right) reference; rejected: the greedy mistake
    assert pick_pair(["ok", "bad1", "bad2", "ok", "bad3", "gold"], [1, 0, 0, 1, 0, 1], [S, S, S, S, G, R]) == (0, 4)
    # no right answer of the run's: the reference is chosen; the mistake made twice is rejected
    assert pick_pair(["bad1", "bad2", "bad2", "gold"], [0, 0, 0, 1], [S, S, S, R]) == (3, 1)
    # among right answers, the most frequent one is chosen
    assert pick_pair(["x", "y", "y", "bad"], [1, 1, 1, 0]) == (1, 3)
    # different answers that score the same make no pair, whatever their sources
    assert pick_pair(["x", "y"], [1.0, 1.0], [S, G]) is None


def test_greedy_and_reference_join_the_candidates(run, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    assert main(["pairs", str(run), "--data", str(_prompts(tmp_path / "p.jsonl")), "--samples", "0",
                 "--greedy", "--reference", "--out", str(out), "--max-new-tokens", "24",
                 "--task", "generic", "--text-metric", "rouge_l"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    # the untrained run never writes the reference: every prompt gives (reference, greedy answer)
    assert len(rows) == 6, capsys.readouterr().out
    assert {(r["chosen_from"], r["rejected_from"]) for r in rows} == {(FROM_REFERENCE, GREEDY)}
    assert all(r["chosen"] == REFERENCE and r["score_chosen"] == 1.0 for r in rows)
    assert len({r["rejected"] for r in rows}) >= 1 and main(["data", "check", str(out)]) == 0
    assert "1 answers of the run's for each of 6 prompts" in capsys.readouterr().out
    # the rejected answers are the run's greedy answers (what `lmtune generate` answers), not samples
    from lmtune.generate import GenerationSettings, Generator
    from lmtune.rl.prompts import load_prompts

    examples = load_prompts([str(tmp_path / "p.jsonl")], "auto", "--data").examples
    greedy = Generator.load(str(run)).generate(examples, GenerationSettings(max_new_tokens=24, greedy=True),
                                               progress=False)
    assert [r["rejected"] for r in rows] == [a.strip() for a in greedy]
    # --cut: the same greedy answers, each cut after its first word that departs from the reference
    assert main(["pairs", str(run), "--data", str(tmp_path / "p.jsonl"), "--samples", "0", "--greedy",
                 "--reference", "--cut", "--overwrite", "--out", str(out), "--max-new-tokens", "24",
                 "--task", "generic", "--text-metric", "rouge_l"]) == 0
    cut = [json.loads(line) for line in out.read_text().splitlines()]
    assert [c["rejected"] for c in cut] == [cut_at_mistake(r["chosen"], r["rejected"]) for r in rows]
    # marked partial exactly where the cut shortened the answer (no end is trained after those)
    assert [c.get("rejected_partial", False) for c in cut] == [c["rejected"] != r["rejected"] for c, r in zip(cut, rows)]
    assert main(["data", "check", str(out)]) == 0
    # fewer than two candidates per prompt is refused before the model loads
    assert main(["pairs", str(run), "--data", str(tmp_path / "p.jsonl"), "--samples", "1",
                 "--out", str(tmp_path / "x.jsonl")]) == 2 and not (tmp_path / "x.jsonl").exists()


def test_cut_keeps_the_rejected_answer_up_to_its_first_mistake():
    gold = "SELECT name FROM customers WHERE age < 25"
    assert cut_at_mistake(gold, "SELECT name FROM customers WHERE age BETWEEN 27 AND 25") == \
        "SELECT name FROM customers WHERE age BETWEEN"
    # an answer that stops early: stopping is the mistake, so all of it stays
    assert cut_at_mistake(gold + " ORDER BY age DESC", gold) == gold
    # a mistake in the first word, and one in the last
    assert cut_at_mistake(gold, "SHOW tables") == "SHOW"
    assert cut_at_mistake(gold, gold[:-2] + "52") == gold[:-2] + "52"
    # the answer's own spacing stays as it was
    assert cut_at_mistake("x  y z", "x  y w") == "x  y w"
