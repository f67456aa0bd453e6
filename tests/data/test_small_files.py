"""Small files through the one pipeline (prepare.load_split, prepare.tokenize_files: eval's test
sets, few-shot shots, `eval --test` loss rows) give what the list-based reference gives: the
same examples, rows and error messages."""

from __future__ import annotations

import json

import pytest
from data_reference import load_split as reference_load_split
from data_reference import tokenize_examples

import tiny_tokenizers as tt
from lmtune.data.prepare import load_split, tokenize_files
from lmtune.data.templates import get_template
from lmtune.errors import DataError


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


ROWS = [{"instruction": f"question {i}", "input": "x" * i, "output": f"answer {i}"} for i in range(30)]


def test_load_split_gives_the_reference_examples_and_errors(tmp_path):
    path = _write(tmp_path / "t.jsonl", ROWS)
    assert load_split([path], "auto", "test data") == reference_load_split([path], "auto", "test data")
    bad = _write(tmp_path / "bad.jsonl", ROWS[:3] + [{"instruction": "q"}, {"text": "t"}])
    with pytest.raises(DataError) as new:
        load_split([bad], "auto", "test data")
    with pytest.raises(DataError) as ref:
        reference_load_split([bad], "auto", "test data")
    assert len(new.value.problems) == 2
    assert (new.value.args, new.value.problems) == (ref.value.args, ref.value.problems)


def test_tokenize_files_gives_the_reference_rows(tmp_path):
    path = _write(tmp_path / "t.jsonl", ROWS)
    tokenizer = tt.gpt2_style()
    template = get_template("alpaca", "alpaca")
    rows = tokenize_files([path], "auto", template, tokenizer, 12, False, "test data", "test")
    ref = tokenize_examples(reference_load_split([path]).examples, template, tokenizer, 12)
    assert rows == [{"input_ids": i, "completion_mask": m} for i, m in zip(ref.input_ids, ref.completion_mask)]
    assert ref.dropped and len(rows) == 30 - ref.dropped        # max_length 12 drops some, as training does
