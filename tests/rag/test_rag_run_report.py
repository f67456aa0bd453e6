"""A run trained with rag.docs: its after-train evaluation scores base, base + docs, tuned and tuned
+ docs (the docs of rag.eval_docs), report.html and `lmtune compare` show them side by side, and
`lmtune eval RUN` measures the validation loss on the same passages training did (one number)."""

from __future__ import annotations

import json

import pytest
import yaml

from lmtune.cli import main
from rag_runs import CATALOGUE, write_catalogue

QA = [("How many euros does the Brisa toaster cost?", "35 euros"),
      ("How many litres does the Aurora kettle hold?", "1.7 litres"),
      ("How many days does the Cumulus blender take to ship?", "2 days"),
      ("How many watts does the Delta desk lamp bulb use?", "7 watts"),
      ("How many days do I have to return an item?", "30 days")]
VAL = [("How many euros does the Aurora kettle cost?", "49 euros"),
       ("How many slots does the Brisa toaster have?", "four"),
       ("How many days does the Aurora kettle take to ship?", "3 days")]
# the catalogue after training: a changed price the evaluation retrieves
NOW = [{**r, "text": r["text"].replace("35 euros", "39 euros")} for r in CATALOGUE]


def _alpaca(path, pairs):
    path.write_text("".join(json.dumps({"instruction": q, "input": "", "output": a}) + "\n" for q, a in pairs))
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rag_run_report")
    docs, now = write_catalogue(root / "docs_v1.jsonl"), write_catalogue(root / "docs_v2.jsonl", NOW)
    cfg = {"model": {"name_or_path": "tiny"},
           "data": {"train": [_alpaca(root / "train.jsonl", QA * 2)],
                    "validation": [_alpaca(root / "val.jsonl", VAL)],
                    "test": [_alpaca(root / "test.jsonl", QA[:2])], "max_length": 256, "template": "chatml"},
           "train": {"max_steps": 2, "batch_size": 2, "grad_accum": 1, "threads": 1, "logging_steps": 1,
                     "eval_batch_size": 2, "load_best": False},
           "eval": {"after_train": True, "forgetting_check": False, "max_new_tokens": 4},
           "rag": {"docs": docs.name, "eval_docs": now.name, "top_k": 1},   # relative to the config file
           "output": {"dir": str(root / "run")}}
    path = root / "rag.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    assert main(["train", str(path)]) == 0
    return {"run": root / "run", "docs": docs, "now": now}


def _eval_json(run) -> dict:
    return json.loads((run["run"] / "eval.json").read_text())


def test_after_train_scores_with_and_without_the_eval_docs_and_the_report_shows_them(run, capsys):
    ev = _eval_json(run)
    task = ev["task"]
    for side in ("base", "base_rag", "tuned", "tuned_rag"):
        assert set(task[side]) == set(task["metrics"]), side
    assert ev["rag"]["docs"] == str(run["now"]) and ev["rag"]["top_k"] == 1
    preds = [json.loads(line) for line in (run["run"] / "eval_predictions.jsonl").read_text().splitlines()]
    assert [p["sources"][0]["id"] for p in preds] == ["toaster", "kettle"]
    assert "39 euros" in preds[0]["sources"][0]["text"]   # the current catalogue, not the trained one
    html = (run["run"] / "report.html").read_text()
    table = html.split("With and without retrieved documents")[1]
    assert all(h in table for h in ("base + docs", "tuned + docs", f"docs {run['now']}", "top_k 1"))
    from lmtune.ui.pages import run_page

    ui = run_page(run["run"].parent, run["run"], read_only=True).split("With and without retrieved documents")[1]
    assert "tuned + docs" in ui and f"docs {run['now']}" in ui
    capsys.readouterr()
    assert main(["compare", str(run["run"])]) == 0
    out = capsys.readouterr().out
    assert "+ docs" in out.splitlines()[0] and f"+ docs retrieved from docs {run['now']}" in out


def test_eval_measures_validation_loss_on_training_s_passages(run, capsys):
    trained = json.loads((run["run"] / "train_summary.json").read_text())["eval_loss"]
    after_train = _eval_json(run)["validation"]["tuned"]
    assert after_train["loss"] == pytest.approx(trained, abs=1e-6)
    assert "with the passages training gave it" in _eval_json(run)["validation"]["source"]
    # --docs is for the task metrics: the loss keeps the passages training saw
    assert main(["eval", str(run["run"]), "--docs", str(run["now"]), "--no-forgetting", "--num-samples", "1",
                 "--max-new-tokens", "2"]) == 0
    val = _eval_json(run)["validation"]
    assert val["tuned"]["tokens"] == after_train["tokens"]   # without the passages: far fewer prompt tokens
    assert val["tuned"]["loss"] == pytest.approx(trained, rel=1e-4)
    assert "with the passages training gave it" in val["source"]


def test_bad_eval_docs_stop_the_run_before_training(tmp_path, capsys):
    docs = write_catalogue(tmp_path / "docs.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"id": "kettle"}\n')
    cfg = {"model": {"name_or_path": "tiny"}, "data": {"train": [_alpaca(tmp_path / "train.jsonl", QA * 2)]},
           "rag": {"docs": str(docs), "eval_docs": str(tmp_path / "bad.jsonl")}, "output": {"dir": str(tmp_path / "run")}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(tmp_path / "c.yaml")]) == 2
    err = capsys.readouterr().err
    assert "rag.eval_docs" in err and "bad.jsonl:1: text" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
