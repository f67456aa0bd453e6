"""`lmtune advise` says hybrid (fine-tune for the style, retrieve for the facts) when the data looks
like changing facts or the user says so, and why; extraction-like data stays a plain fine-tune."""

from __future__ import annotations

import json

from lmtune.advise import Answers, Context, advise, looks_like_changing_facts, summarize_data
from lmtune.cli import main
from lmtune.config import load_config
from lmtune.estimate.hardware import GIB, Device
from lmtune.tasks import task_files

GPU = Device("t", "test 80 GiB", "cuda", 80 * GIB, 100.0, 0.4, 1.0)
CATALOGUE = task_files("catalogue")


def context(paths, docs=None) -> Context:
    return Context("qwen2.5-0.5b", summarize_data([str(p) for p in paths]), GPU, 1, 512, docs=docs)


def test_catalogue_data_means_hybrid_and_says_why():
    ctx = context([CATALOGUE["train"]], docs=str(CATALOGUE["docs_v2"]))
    assert ctx.data.facts["answers_with_new_numbers"] == 1.0 and ctx.data.facts["distinct_names"] == 150
    adv = advise(Answers(), ctx)
    assert adv.verdict == "hybrid" and adv.fine_tune
    assert "numbers their prompt does not hold" in adv.reasons[0] and "retrieve" in adv.reasons[1]
    assert adv.config["rag"]["docs"] == str(CATALOGUE["docs_v2"].resolve())
    assert adv.config["method"] == "lora" == adv.hyperparameters["method"]


def test_extraction_and_sql_data_are_not_changing_facts():
    # their answers copy the numbers of the question (JSON extraction, SQL over the question's values)
    for task in ("json", "sql"):
        ctx = context([task_files(task)["train"]])
        assert looks_like_changing_facts(ctx.data.facts) is None, (task, ctx.data.facts)
        assert advise(Answers(), ctx).verdict == "lora"


def test_the_user_can_say_it_and_the_style_question_gates_it(tmp_path):
    ctx = context([CATALOGUE["train"]])
    assert advise(Answers(style_or_behaviour=False), ctx).verdict == "rag"      # no style to learn
    no_docs = advise(Answers(), ctx)
    assert no_docs.verdict == "hybrid" and "rag" not in no_docs.config
    assert any("--docs" in w for w in no_docs.warnings)
    bare = Context("qwen2.5-0.5b", None, GPU, 1, 512)
    assert advise(Answers(style_and_facts=True, examples=3000), bare).verdict == "hybrid"
    few = advise(Answers(style_and_facts=True, examples=200), bare)
    assert few.verdict == "rag" and "< 500" in few.reasons[-1]
    assert advise(Answers(examples=3000), bare).verdict == "lora"


def test_cli_writes_a_hybrid_config_that_retrieves(tmp_path, capsys):
    out = tmp_path / "advised.yaml"
    code = main(["advise", "--model", "tiny", "--data", str(CATALOGUE["train"]), "--docs",
                 str(CATALOGUE["docs_v2"]), "--gpu", "4090", "--yes", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "verdict: hybrid: fine-tune (" in text and "for the facts" in text
    cfg = load_config(out)
    assert cfg.rag.docs == str(CATALOGUE["docs_v2"].resolve()) and cfg.rag.top_k == 3


def test_cli_checks_the_docs_first(tmp_path, capsys):
    bad = tmp_path / "docs.jsonl"
    bad.write_text(json.dumps({"id": "a", "text": "fine"}) + "\n{not json\n")
    code = main(["advise", "--data", str(CATALOGUE["train"]), "--docs", str(bad), "--yes",
                 "--out", str(tmp_path / "a.yaml")])
    assert code == 2 and "docs.jsonl:2" in capsys.readouterr().err and not (tmp_path / "a.yaml").exists()
