"""The progress bar users see while tokenizing (token_shards.tokenize_columns and
tokenize_to_arrow): its description, unit and count, and when it is shown (more than 2000 examples, on a
terminal, and for the Arrow pipeline only when asked). Real tqdm writing to a stream that says it is
a terminal; tiny examples and a tokenizer trained in milliseconds."""

from __future__ import annotations

import io
import json
import re
import sys

import numpy as np
import pytest

import tiny_tokenizers as tt
from lmtune.data.records import scan
from lmtune.data.templates import get_template
from lmtune.data.token_shards import tokenize_columns, tokenize_to_arrow

N = 2001   # one more than the threshold


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """N short chat examples; the one at position 5 has two turns, which the alpaca template refuses."""
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
            for i in range(N)]
    rows[5]["messages"] += [{"role": "user", "content": "more"}, {"role": "assistant", "content": "b"}]
    d = tmp_path_factory.mktemp("progress")
    path = d / "chat.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    split = scan([str(path)], "auto", d / "chat.arrow", procs=1)
    return split, split.examples(np.arange(N)), get_template("alpaca", "chat"), tt.gpt2_style()


def _stderr(monkeypatch, terminal: bool) -> io.StringIO:
    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)   # tqdm's default file, read when the bar is made
    return stream


def _final(text: str) -> str:
    """The bar as it stands at the end (tqdm redraws it after each carriage return)."""
    return text.strip().split("\r")[-1].strip()


def test_tokenize_columns_shows_its_bar_from_2001_examples_on_a_terminal(data, monkeypatch):
    _, examples, template, tokenizer = data
    out = _stderr(monkeypatch, terminal=True)
    result = tokenize_columns(examples, template, tokenizer, 32)
    assert len(result["input_ids"]) == len(result["completion_mask"]) == N - 1   # the bar counts the refused one too
    assert re.fullmatch(r"tokenizing: 100%\|.*\| 2001/2001 \[.*ex/s\]", _final(out.getvalue())), out.getvalue()

    out = _stderr(monkeypatch, terminal=True)
    tokenize_columns(examples, template, tokenizer, 32, desc="tokenizing validation")
    assert re.fullmatch(r"tokenizing validation: 100%\|.*\| 2001/2001 \[.*ex/s\]", _final(out.getvalue()))


def test_tokenize_columns_hides_its_bar_for_2000_examples_or_off_a_terminal(data, monkeypatch):
    _, examples, template, tokenizer = data
    out = _stderr(monkeypatch, terminal=True)
    tokenize_columns(examples[:N - 1], template, tokenizer, 32)
    assert out.getvalue() == ""
    out = _stderr(monkeypatch, terminal=False)
    tokenize_columns(examples, template, tokenizer, 32)
    assert out.getvalue() == ""


def test_arrow_bar_shows_every_example_once_from_2001_on_a_terminal(data, monkeypatch):
    split, _, template, tokenizer = data
    out = _stderr(monkeypatch, terminal=True)
    result = tokenize_to_arrow(split, np.arange(N), template, tokenizer, 32, False, None, "train")   # progress on by default
    assert result.examples == N - 1 and len(result.problems) == 1   # the bar counts the refused one too
    assert re.fullmatch(r"tokenizing train: 100%\|.*\| 2001/2001 \[.*ex/s\]", _final(out.getvalue())), out.getvalue()


@pytest.mark.parametrize("n, terminal, progress", [(N - 1, True, True), (N, False, True), (N, True, False)])
def test_arrow_bar_hidden_below_the_threshold_off_a_terminal_or_when_off(data, monkeypatch, n, terminal, progress):
    split, _, template, tokenizer = data
    out = _stderr(monkeypatch, terminal)
    tokenize_to_arrow(split, np.arange(n), template, tokenizer, 32, False, None, "train", progress=progress)
    assert out.getvalue() == ""
