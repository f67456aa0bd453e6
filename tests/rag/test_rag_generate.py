"""`lmtune generate RUN --docs/--no-docs`: the passages reach the prompt (the answer is the one the
augmented prompt gets without retrieval), the run's rag.docs is the default, bad docs exit 2."""

import json

import pytest

from lmtune.cli import main
from lmtune.config import RagConfig
from lmtune.rag.prompt import augment
from lmtune.rag.retrieve import Retriever
from rag_runs import rag_run, write_catalogue

QUESTION = "How many euros does the Brisa toaster cost?"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rag_generate")
    docs = write_catalogue(root / "catalogue.jsonl")
    return {"run": rag_run(root, docs, top_k=2), "docs": docs, "root": root}


def _generate(capsys, *argv):
    assert main(["generate", *map(str, argv), "--max-new-tokens", "10"]) == 0
    out = capsys.readouterr()
    return out.out[:-1], out.err


def _expected_passages(run, k=2):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(run["run"] / "adapter"))
    return Retriever.build(RagConfig(docs=str(run["docs"])), tok).search(QUESTION, k)


def test_the_run_s_docs_are_the_default_and_reach_the_prompt(run, capsys):
    with_docs, err = _generate(capsys, run["run"], "--prompt", QUESTION)
    passages = _expected_passages(run)
    assert passages[0].id == "toaster" and len(passages) == 2   # the run's rag.top_k
    assert f"sources: [1] toaster ({run['docs']}:2)" in err and "retrieval: 5 passages" in err
    by_hand, _ = _generate(capsys, run["run"], "--no-docs", "--prompt", augment(QUESTION, passages))
    plain, err = _generate(capsys, run["run"], "--no-docs", "--prompt", QUESTION)
    assert with_docs == by_hand and with_docs != plain and "sources" not in err


def test_docs_flag_replaces_the_run_s_docs_and_top_k(run, capsys, tmp_path):
    other = write_catalogue(tmp_path / "other.jsonl",
                            [{"id": "brisa-2027", "text": "The Brisa toaster now costs 41 euros."},
                             {"id": "misc", "text": "Nothing about toasters here."}])
    _, err = _generate(capsys, run["run"], "--docs", other, "--top-k", "1", "--prompt", QUESTION)
    assert f"sources: [1] brisa-2027 ({other}:1)" in err and "[2]" not in err


def test_file_prompts_carry_their_sources(run, capsys, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "What does the Cumulus blender cost?"}) + "\n"
                       + json.dumps({"instruction": "Is the Delta lamp bright?", "input": ""}) + "\n")
    out = tmp_path / "out.jsonl"
    assert main(["generate", str(run["run"]), "--file", str(prompts), "--out", str(out), "--max-new-tokens", "4"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["sources"][0]["id"] for r in rows] == ["blender", "lamp"]
    assert rows[0]["sources"][0]["text"].startswith("The Cumulus blender")


def test_bad_or_missing_docs_exit_2_before_the_model_loads(run, capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "ok"}\n{"id": "b"}\n')
    assert main(["generate", str(run["run"]), "--docs", str(bad), "--prompt", "q"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: text: expected a non-empty string" in err and "Traceback" not in err
    moved = rag_run(tmp_path, tmp_path / "gone.jsonl")
    assert main(["generate", str(moved), "--prompt", "q"]) == 2
    err = capsys.readouterr().err
    assert "the run retrieves from rag.docs" in err and "gone.jsonl does not exist" in err and "--no-docs" in err
    with pytest.raises(SystemExit) as info:   # argparse's own exit
        main(["generate", str(moved), "--docs", str(run["docs"]), "--no-docs", "--prompt", "q"])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
