"""What a user sees while evaluating and replaying, pinned where the other tests cannot see it: the
label of the tokenizing progress bars (drawn only on a terminal for more than 2,000 examples, so
stderr is replaced here by a stream that says it is a terminal) and the `[eval]` lines reaching a
piped stdout at once (flushed, not left in the buffer)."""

from __future__ import annotations

import io
import json
import sys

import pytest

from lmtune.config import load_config
from lmtune.data.templates import get_template
from tiny_models import build_tokenizer

MANY = 2001   # one more than tokenize_examples' threshold for drawing its bar


class Terminal(io.StringIO):
    """stderr as tqdm sees a terminal: it draws the bar only when isatty() is True."""

    def isatty(self):
        return True


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def _terminal(monkeypatch):
    """In the test's body: pytest's capture puts its own sys.stderr back between a fixture and the test."""
    err = Terminal()
    monkeypatch.setattr(sys, "stderr", err)   # tqdm picks sys.stderr when the bar is made
    return err


def test_the_test_set_bar_is_labelled_tokenizing_test(tok, tmp_path, monkeypatch):
    from lmtune.evaluate import loss_data
    from lmtune.evaluate.run import EvalSettings

    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"instruction": f"q{i}", "input": "", "output": "a"}) + "\n"
                            for i in range(MANY)))
    cfg = load_config(None, ["model.name_or_path=unused", f"data.train={test}", "data.format=alpaca",
                             "data.template=alpaca"])
    terminal = _terminal(monkeypatch)
    rows, what = loss_data(cfg, tok, get_template("alpaca", "alpaca", tok), EvalSettings(test=[str(test)]))
    assert len(rows) == MANY and what == f"test: {test}"
    assert "tokenizing test: 100%" in terminal.getvalue() and f"{MANY}/{MANY}" in terminal.getvalue()


def test_the_replay_bar_is_labelled_tokenizing_replay(tok, monkeypatch):
    from lmtune.data.replay import tokenize_replay

    terminal = _terminal(monkeypatch)
    out = tokenize_replay([{"text": f"w{i}"} for i in range(MANY)], get_template("chatml", "chat", tok), tok, 16)
    assert len(out["input_ids"]) == MANY
    assert "tokenizing replay: 100%" in terminal.getvalue()


def test_eval_lines_reach_a_piped_stdout_at_once(monkeypatch):
    from lmtune.evaluate.run import EvalSettings, _log

    pipe = io.BytesIO()
    out = io.TextIOWrapper(pipe, encoding="utf-8")   # buffered like a piped stdout: holds text until flushed
    monkeypatch.setattr(sys, "stdout", out)
    _log(EvalSettings(progress=False), "hidden")
    _log(EvalSettings(), "scoring 3 examples")
    assert pipe.getvalue() == b"[eval] scoring 3 examples\n"   # read without flushing `out`
    monkeypatch.undo()
    out.detach()
