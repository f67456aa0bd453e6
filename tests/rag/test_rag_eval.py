"""`lmtune eval RUN --docs`: task metrics with and without retrieval side by side; the passages reach
the prompts (the answers are those of the augmented prompts without retrieval); the sources per
example in eval_predictions.jsonl; the run's rag.docs by default, --no-docs for none."""

import json

import pytest

from lmtune.cli import main
from lmtune.config import RagConfig
from lmtune.rag.prompt import augment
from lmtune.rag.retrieve import Retriever
from rag_runs import rag_run, write_catalogue

TESTS = [("How many euros does the Brisa toaster cost?", "35 euros"),
         ("How many litres does the Aurora kettle hold?", "1.7 litres")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rag_eval")
    docs = write_catalogue(root / "catalogue.jsonl")
    test = root / "test.jsonl"
    test.write_text("".join(json.dumps({"instruction": q, "input": "", "output": a}) + "\n" for q, a in TESTS))
    return {"run": rag_run(root, docs, top_k=2), "docs": docs, "test": test}


def _eval(capsys, run, *extra):
    argv = ["eval", str(run["run"]), "--test", str(run["test"]), "--no-forgetting", "--max-new-tokens", "6",
            "--batch-size", "1", *map(str, extra)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in (run["run"] / "eval_predictions.jsonl").read_text().splitlines()]
    return json.loads((run["run"] / "eval.json").read_text()), rows, out


def test_eval_scores_with_and_without_the_run_s_docs(run, capsys):
    result, rows, out = _eval(capsys, run)
    task = result["task"]
    assert set(task["tuned_rag"]) == set(task["tuned"]) == set(task["metrics"])
    assert result["rag"]["docs"] == str(run["docs"]) and result["rag"]["top_k"] == 2
    assert [r["sources"][0]["id"] for r in rows] == ["toaster", "kettle"]
    assert "tuned+docs" in out and f"top 2 passages of {run['docs']}" in out
    # the answer with docs is the one the prompt with the passages gets, without retrieval
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(run["run"] / "adapter"))
    passages = Retriever.build(RagConfig(docs=str(run["docs"])), tok).search(TESTS[0][0], 2)
    assert [p.id for p in passages] == [s["id"] for s in rows[0]["sources"]]
    assert main(["generate", str(run["run"]), "--no-docs", "--max-new-tokens", "6",
                 "--prompt", augment(TESTS[0][0], passages)]) == 0
    assert rows[0]["tuned_rag_raw"] == capsys.readouterr().out[:-1]
    assert rows[0]["tuned_rag_raw"] != rows[0]["tuned_raw"]


def test_no_docs_scores_once_and_base_gets_docs_too(run, capsys, tmp_path):
    result, rows, out = _eval(capsys, run, "--no-docs")
    assert "tuned_rag" not in result["task"] and "rag" not in result and "sources" not in rows[0]
    other = write_catalogue(tmp_path / "other.jsonl",
                            [{"id": "kettle-2027", "text": "The Aurora kettle now holds 2 litres."}])
    result, rows, out = _eval(capsys, run, "--docs", other, "--base")
    assert result["task"]["base_rag"] is not None and "base+docs" in out
    assert [len(r["sources"]) for r in rows] == [0, 1] and rows[1]["sources"][0]["id"] == "kettle-2027"
    assert "base_rag_raw" in rows[1]
