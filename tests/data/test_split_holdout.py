"""lmtune/data/holdout.py as pure functions (and the list-based dedupe of tests/data_reference.py):
deduplication, the validation split, the
held-out test split's size rule and draw, the held-out file, and the split warnings, each with
literal expected values."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest

from lmtune.data.formats import Example
from lmtune.data.holdout import (HELDOUT_FILE, MAX_SIZE, MIN_EXAMPLES, MIN_SIZE, SHARE, SMALL_SPLIT, heldout_size,
                                 hold_out, split_train_validation, split_warnings, to_record, write_heldout)

from data_reference import conflicting_prompts, dedupe, drop_overlap, prompts_in_train


def _ex(i, answer=None, source=None, instruction=None):
    answer = f"answer {i}" if answer is None else answer
    instruction = f"question {i}" if instruction is None else instruction
    fields = {"instruction": instruction, "input": "", "output": answer}
    return Example(source=source or f"f.jsonl:{i}", format="alpaca", fields=fields,
                   messages=[{"role": "user", "content": instruction}, {"role": "assistant", "content": answer}])


def _text(t, source="t.jsonl:1"):
    return Example(source=source, format="text", text=t)


# ---------------------------------------------------------------- dedupe and the validation split

def test_dedupe_keeps_the_first_copy_and_names_a_few_duplicates():
    exs = [_ex(1), _ex(2), _ex(1, source="f.jsonl:9"), _ex(1, answer="answer  1 ", source="f.jsonl:10"),
           _ex(2, source="f.jsonl:11")]
    res = dedupe(exs, keep_samples=2)
    assert res.kept == exs[:2] and res.removed == 3
    assert res.first_duplicates == [("f.jsonl:9", "f.jsonl:1"), ("f.jsonl:10", "f.jsonl:1")]
    assert dedupe(exs).first_duplicates[-1] == ("f.jsonl:11", "f.jsonl:2")  # 5 by default
    assert dedupe(exs, keep_samples=0).first_duplicates == []
    many = [_ex(1, source=f"f.jsonl:{i}") for i in range(8)]
    assert len(dedupe(many).first_duplicates) == 5 and dedupe(many).removed == 7
    assert dedupe([]).removed == 0


def test_drop_overlap_removes_validation_examples_seen_in_train():
    kept, n = drop_overlap([_ex(1), _ex(5), _ex(2, answer=" answer 2")], [_ex(1), _ex(2), _ex(3)])
    assert [e.fields["output"] for e in kept] == ["answer 5"] and n == 2


def test_conflicting_prompts_counts_prompts_with_several_answers():
    exs = [_ex(1), _ex(1, answer="other"), _ex(1, answer="third"), _ex(2), _ex(2), _ex(3, answer="x"),
           _ex(3, answer="y"), _text("a"), _text("b")]
    assert conflicting_prompts(exs) == 2


@pytest.mark.parametrize("n, share, n_val", [(10, 0.1, 1), (10, 0.25, 2), (10, 0.26, 3), (3, 0.01, 1), (4, 0.9, 3),
                                             (2, 0.5, 1)])
def test_validation_split_size_and_seeded_draw(n, share, n_val):
    exs = [_ex(i) for i in range(n)]
    train, val = split_train_validation(exs, share, seed=7)
    assert len(val) == n_val and len(train) == n - n_val
    order = list(range(n))
    random.Random(7).shuffle(order)
    assert val == [exs[i] for i in sorted(order[:n_val])]   # file order inside the split
    assert train == [e for e in exs if e not in val]
    assert split_train_validation(exs, share, seed=7) == (train, val)


def test_no_validation_split_for_share_zero_or_one_example():
    exs = [_ex(i) for i in range(5)]
    assert split_train_validation(exs, 0.0, 1) == (exs, [])
    assert split_train_validation(exs, -0.1, 1) == (exs, [])
    assert split_train_validation(exs[:1], 0.5, 1) == (exs[:1], [])
    train, val = split_train_validation(exs, 0.5, 1)
    assert train is not exs and len(val) == 2  # round(2.5) == 2
    assert split_train_validation(exs, 0.5, 2) != (train, val) or split_train_validation(exs, 0.5, 3) != (train, val)


# ---------------------------------------------------------------- holdout.py

def test_heldout_constants():
    assert (HELDOUT_FILE, SHARE, MIN_SIZE, MAX_SIZE, MIN_EXAMPLES, SMALL_SPLIT) == (
        "heldout_test.jsonl", 0.10, 20, 200, 10, 20)


@pytest.mark.parametrize("n, size", [(0, 0), (9, 0), (10, 2), (14, 2), (15, 3), (24, 4), (60, 12), (99, 19),
                                     (100, 20), (101, 20), (199, 20), (205, 20), (215, 22), (500, 50), (1000, 100), (2000, 200),
                                     (2010, 200), (5000, 200)])
def test_heldout_size_rule(n, size):
    assert heldout_size(n) == size


def test_a_configured_test_size_wins_but_leaves_one_to_train_on():
    assert heldout_size(50, 7) == 7 and heldout_size(5, 7) == 4 and heldout_size(500, 0) == 0
    assert heldout_size(1, 3) == 0 and heldout_size(0, 3) == 0 and heldout_size(3, 2) == 2


def test_hold_out_draws_with_its_own_seeded_stream():
    exs = [_ex(i) for i in range(12)]
    train, test = hold_out(exs, 3, seed=4)
    order = list(range(12))
    random.Random("heldout-test:4").shuffle(order)
    assert test == [exs[i] for i in sorted(order[:3])] and train == [e for e in exs if e not in test]
    assert hold_out(exs, 0, 4) == (exs, []) and hold_out(exs, -1, 4) == (exs, [])
    assert hold_out(exs, 0, 4)[0] is not exs
    train, [one] = hold_out(exs, 1, 4)
    assert one == exs[order[0]] and len(train) == 11


def test_prompts_in_train_counts_test_prompts_asked_in_training():
    test = [_ex(1, answer="new"), _ex(2), _ex(3), _text("question 1")]
    train = [_ex(1), _ex(2, answer="other"), _text("question 3")]
    assert prompts_in_train(test, train) == 2


def test_held_out_records_round_trip_in_their_own_format(tmp_path):
    alpaca = _ex(1, answer="Köln")
    chat = Example(source="c", format="chat", messages=[{"role": "user", "content": "hi"},
                                                         {"role": "assistant", "content": "yo"}], fields={"id": 3})
    assert to_record(alpaca) == {"instruction": "question 1", "input": "", "output": "Köln"}
    assert to_record(chat) == {"id": 3, "messages": chat.messages}
    write_heldout(tmp_path / HELDOUT_FILE, [alpaca, chat])
    text = (tmp_path / HELDOUT_FILE).read_text(encoding="utf-8")
    assert text == (json.dumps(to_record(alpaca), ensure_ascii=False) + "\n"
                    + json.dumps(to_record(chat), ensure_ascii=False) + "\n")
    assert "Köln" in text


def _data(task=None, train=()):
    return SimpleNamespace(task=task, train=list(train))


def test_split_warnings_each_with_its_numbers():
    assert split_warnings(_data(train=["a"]), {}, 0, 20, 0) == []
    assert split_warnings(_data(train=["a"]), {}, 20, 50, 0) == []
    [both] = split_warnings(_data("sql", ["a"]), {}, 0, 20, 0)
    assert both == ("data.task=sql and data.train are both set: training uses your files, validation/test files "
                    "and the scorer come from the sql task where you set none; unset one of them if that is not "
                    "what you meant")
    assert split_warnings(_data("sql"), {}, 0, 20, 0) == []
    [val] = split_warnings(_data(), {}, 19, 20, 0)
    assert val == ("the validation split has 19 examples (< 20): its loss, and the checkpoint chosen by it, are "
                   "noisy; give data.validation or raise data.val_split")
    assert split_warnings(_data(), {}, 1, 20, 0)[0].startswith("the validation split has 1 examples")
    [none] = split_warnings(_data(), {}, 0, None, 0)
    assert none == ("no test split: nothing will score generated answers (give data.test, or at least 10 training "
                    "examples and data.test_size unset so that lmtune holds some out)")
    [small] = split_warnings(_data(), {}, 0, 3, 0)
    assert small == ("the test split has 3 examples (< 20): one answer moves exact match by 33 points; give "
                     "data.test with more examples")
    assert split_warnings(_data(), {}, 0, 19, 0)[0].startswith("the test split has 19 examples")
    assert split_warnings(_data(), {}, 0, 1, 0) == [
        "the test split has 1 examples (< 20): one answer moves exact match by 100 points; give data.test with "
        "more examples"]
    assert split_warnings(_data(), {}, 0, 0, 0) == []
    [overlap] = split_warnings(_data(), {}, 0, 40, 5)
    assert overlap == ("5 of 40 test prompts also appear in the training data: the test score partly measures "
                       "memorisation")
