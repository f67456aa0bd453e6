"""Preference records (dpo/orpo pairs, kto labels): `lmtune data check` lists every bad record
with file:line, and the template renders pairs as SFT renders its examples."""

from __future__ import annotations

import json

import pytest

from lmtune.cli import main
from lmtune.data.preference import check_record, render
from lmtune.data.readers import Record
from lmtune.data.templates import AlpacaTemplate, ChatMLTemplate


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


BAD_PAIRS = [
    ({"prompt": "a?", "chosen": "yes", "rejected": "no"}, None),
    ({"prompt": "b?", "chosen": "same", "rejected": " same"}, "chosen and rejected are the same text"),
    ({"prompt": "c?", "chosen": "  ", "rejected": "no"}, "empty string (chosen)"),
    ({"prompt": "d?", "chosn": "x", "rejected": "no"}, "unknown field 'chosn' (did you mean 'chosen'?)"),
    ({"prompt": [{"role": "user", "content": "e?"}], "chosen": [{"role": "user", "content": "x"}],
      "rejected": "no"}, "expected one assistant message"),
    ({"prompt": "f?", "chosen": 3, "rejected": "no"}, "expected a string or a list of messages, got int (chosen)"),
    ({"prompt": "g?", "chosen": "yes", "rejected": "n", "rejected_partial": "yes"},
     "expected true or false, got 'yes' (rejected_partial)"),
    ({"prompt": "h?", "chosen": "yes", "rejected": "n", "rejected_partial": True}, None),
]


def test_data_check_lists_each_bad_pair_with_its_line(tmp_path, capsys):
    path = _write(tmp_path / "pairs.jsonl", [r for r, _ in BAD_PAIRS])
    rc = main(["data", "check", str(path)])
    err = capsys.readouterr().err
    assert rc == 2
    for line, (_, expected) in enumerate(BAD_PAIRS, start=1):
        if expected:
            assert f"{path}:{line}: " in err and expected in err.split(f"{path}:{line}: ", 1)[1].splitlines()[0]
    assert f"{path}:1:" not in err and f"{path}:8:" not in err   # the good records are not listed


def test_data_check_kto_label_must_be_bool(tmp_path, capsys):
    path = _write(tmp_path / "kto.jsonl", [{"prompt": "a?", "completion": "yes", "label": True},
                                           {"prompt": "b?", "completion": "no", "label": "false"},
                                           {"prompt": "c?", "completion": "no", "label": False}])
    rc = main(["data", "check", str(path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{path}:2: expected true or false, got 'false' (label)" in err


def test_data_check_accepts_good_pairs_and_shows_the_rendered_pair(tmp_path, capsys):
    path = _write(tmp_path / "pairs.jsonl", [
        {"prompt": "Which city?", "chosen": "Rome", "rejected": "None"},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Which?"}],
         "chosen": [{"role": "assistant", "content": "Oslo"}], "rejected": [{"role": "assistant", "content": "?"}]}])
    rc = main(["data", "check", str(path), "--template", "chatml"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "2 read, 2 valid" in out and "ok: 2 pairs records" in out
    assert "chosen: [[Rome<|im_end|>]]" in out


@pytest.mark.parametrize("template", [AlpacaTemplate(), ChatMLTemplate()])
def test_render_matches_what_sft_trains(template):
    """prompt + chosen is exactly the SFT rendering of the same conversation up to the trained end."""
    rec = {"prompt": "Customers in Rome?", "chosen": "SELECT 1;", "rejected": "no"}
    row, problems = check_record(Record("f:1", rec, "f"), "pairs")
    assert problems == []
    (out,), problems = render([row], ["f:1"], template)
    assert problems == []
    from lmtune.data.templates import as_example

    sft = as_example({"messages": [{"role": "user", "content": rec["prompt"]},
                                   {"role": "assistant", "content": rec["chosen"]}]})
    segments = template.segments(sft)
    assert out["prompt"] == template.render_prompt(rec["prompt"])
    assert out["prompt"] + out["chosen"] == "".join(s.text for s in segments if s.text).rstrip("\n")
    assert out["rejected"].startswith("no")


@pytest.mark.parametrize("template", [AlpacaTemplate(), ChatMLTemplate()])
def test_a_partial_rejected_answer_is_rendered_without_an_end(template):
    """rejected_partial: the rejected text stops where the answer stops; the chosen one keeps its end."""
    rec = {"prompt": "Customers in Rome?", "chosen": "SELECT name FROM customers", "rejected": "SELECT age"}
    whole, partial = (check_record(Record("f:1", r, "f"), "pairs")[0]
                      for r in (rec, {**rec, "rejected_partial": True}))
    (a, b), problems = render([whole, partial], ["f:1", "f:2"], template)
    assert problems == []
    assert b["rejected"] == "SELECT age" and b["rejected_partial"] is True
    # without the mark, the rejected answer ends as the chosen one does (chatml: <|im_end|>)
    assert a["rejected"] == a["chosen"].replace(rec["chosen"], rec["rejected"])
    # an answer that the end-of-turn text spells again ("m" in <|im_end|>) still ends where it ends
    (short,), _ = render([{**partial, "rejected": "m"}], ["f:3"], template)
    assert short["rejected"] == "m"
    assert a["rejected_partial"] is False and b["chosen"] == a["chosen"] and b["prompt"] == a["prompt"]


def test_pairs_given_to_kto_are_one_problem(tmp_path):
    from lmtune.data.preference import load_preference

    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"{i}?", "chosen": "a", "rejected": "b"}) + "\n" for i in range(5)))
    loaded = load_preference([str(path)], "kto")
    assert loaded.problems == [f"{path}: holds pairs records (prompt, chosen, rejected), for train.objective dpo "
                               f"or orpo; this objective reads prompt, completion, label"]
