"""Checks that must come before training, through `lmtune train` on a real tiny model: data.test
(read only by the evaluation after training), data.max_length against the model's positions,
train.max_steps=0. Same contract as test_reliability_inputs.py: exit 2, one message naming the key
or file:line and the fix, no output directory, every file unchanged."""

from __future__ import annotations

import pytest

from lmtune.cli import main
from test_reliability_inputs import Tmp, base, jl, snapshot  # noqa: F401 - base is a fixture

CASES: dict[str, callable] = {}


def case(fn):
    CASES[fn.__name__.removeprefix("case_").replace("_", "-")] = fn
    return fn


@case
def case_test_file_missing(t):
    missing = t.root / "test.jsonl"
    return t.train(f"data.test={missing}"), f"{missing}: file not found", "test data (data.test)"


@case
def case_test_file_bad_line(t):
    f = t.write("test.jsonl", jl({"instruction": "Where?", "output": "SELECT 1;"}, '{"instruction": '))
    return t.train(f"data.test={f}"), f"{f}:2: malformed JSON", "fix each line below"


@case
def case_test_file_is_a_directory_without_data(t):
    d = t.root / "tests"
    d.mkdir()
    return t.train(f"data.test={d}"), f"{d}: no data files", "test data (data.test)"


@case
def case_max_length_beyond_positions(t):
    return (t.train("data.max_length=4096"), "data.max_length: 4096 is longer than the model's 512 positions "
            f"(max_position_embeddings in {t.model / 'config.json'})", "set data.max_length=512 or less")


@case
def case_max_steps_zero(t):
    return t.train("train.max_steps=0"), "train.max_steps: got 0, which trains nothing", "use -1"


@pytest.mark.parametrize("name", list(CASES))
def test_checked_before_training(name, tmp_path, base, capsys):  # noqa: F811
    t = Tmp(tmp_path, base)
    argv, where, fix = CASES[name](t)
    before = snapshot(tmp_path, base)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    message = err[err.index("error: "):]
    assert "Traceback" not in err and message.count("error: ") == 1
    assert where in message and fix in message, message
    assert not t.out.exists(), "the run directory was created: the check came after training began"
    assert snapshot(tmp_path, base) == before


def test_docs_table_lists_every_case():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "reliability.md").read_text()
    assert [n for n in CASES if f"`{n}`" not in doc] == []
