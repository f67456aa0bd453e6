"""lmtune/data/replay.py as functions: the replay count, the seeded draw, the records drawn from each
source (bundled general text, the base's own answers, a user's file), and their tokenization (text
trained on every token, conversations through the run's template).
tests/train/test_replay.py runs replay through training."""

from __future__ import annotations

import json
import random

import pytest

from lmtune.data import replay
from lmtune.data.templates import get_template
from lmtune.errors import DataError
from lmtune.models import open_tokenizer
from lmtune.tasks import ASSETS


@pytest.fixture(scope="module")
def tokenizer():
    return open_tokenizer("tiny")


def _lines(name):
    return [json.loads(line) for line in (ASSETS / "general" / name).read_text(encoding="utf-8").splitlines()]


def test_replay_count_rounds_ratio_times_examples():
    assert replay.replay_count(0.3, 9) == 3          # 2.7: rounded, not cut
    assert replay.replay_count(0.25, 10) == 2
    assert replay.replay_count(2.0, 7) == 14
    assert replay.replay_count(0.0, 100) == 0


def test_draw_is_seeded_and_reshuffles_the_pool_when_it_runs_out():
    assert replay._draw(list(range(5)), 12, 3) == [0, 2, 3, 4, 1, 1, 3, 2, 0, 4, 1, 0]
    assert replay._draw(list("abc"), 2, 7) == ["c", "a"]
    assert replay._draw(list("abc"), 0, 7) == []
    items = list(range(5))
    replay._draw(items, 7, 1)
    assert items == list(range(5))                   # the caller's list is not shuffled in place


def test_general_records_are_drawn_from_the_bundled_set():
    pool = [{"text": r["text"]} for r in _lines("replay.jsonl")]
    got = replay.draw_records("general", 4, 11, None)
    assert got == replay._draw(pool, 4, 11)
    assert replay.draw_records("general", 1, 11, None) == got[:1]
    assert replay.draw_records("general", 0, 11, None) == []
    assert replay.draw_records("general", 4, 12, None) != got


def test_self_records_are_the_base_answers_to_the_bundled_prompts_without_empty_ones():
    prompts = replay._draw([r["prompt"] for r in _lines("replay_prompts.jsonl")], 300, 5)   # > 252: repeats
    asked = []

    def generate(ps):
        asked.append(ps)
        return ["" if p == prompts[0] else f"answer to {p}" for p in ps]

    got = replay.draw_records("self", 300, 5, generate)
    assert asked == [sorted(set(prompts))]           # each prompt answered once, in sorted order
    assert got == [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": f"answer to {p}"}]}
                   for p in prompts if p != prompts[0]]
    assert replay.draw_records("self", 3, 5, None) == []
    assert replay.draw_records("self", 0, 5, generate) == [] and len(asked) == 1


def test_file_records_keep_text_or_messages(tmp_path):
    chat = tmp_path / "chat.jsonl"
    convs = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
             for i in range(3)]
    chat.write_text("".join(json.dumps(c) + "\n" for c in convs))
    assert replay.draw_records(str(chat), 3, 0, None) == replay._draw(convs, 3, 0)
    text = tmp_path / "text.jsonl"
    text.write_text('{"text": "one"}\n{"text": "two"}\n')
    assert sorted(r["text"] for r in replay.draw_records(str(text), 2, 0, None)) == ["one", "two"]
    alpaca = tmp_path / "a.jsonl"
    alpaca.write_text('{"instruction": "say hi", "output": "hi"}\n')
    assert replay.draw_records(str(alpaca), 1, 0, None) == [
        {"messages": [{"role": "user", "content": "say hi"}, {"role": "assistant", "content": "hi"}]}]
    with pytest.raises(DataError) as err:
        replay.draw_records(str(tmp_path / "missing.jsonl"), 1, 0, None)
    assert str(err.value).startswith("1 problem in the replay data: ")


def test_to_examples_numbers_sources_and_keeps_the_kind():
    msgs = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    exs = replay.to_examples([{"text": "t"}, {"messages": msgs}])
    assert [(e.source, e.format, e.text, e.messages) for e in exs] == [
        ("replay:1", "text", "t", None), ("replay:2", "chat", None, msgs)]


def test_tokenize_replay_trains_all_of_text_and_the_answer_of_chats(tokenizer):
    chatml = get_template("chatml", "chat", tokenizer)
    conv = {"messages": [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello you"}]}
    out = replay.tokenize_replay([conv, {"text": "plain words here"}], chatml, tokenizer, 64)
    words = tokenizer("plain words here")["input_ids"] + [tokenizer.eos_token_id]
    assert out["input_ids"][0] == words and out["completion_mask"][0] == [1] * len(words)   # text first
    ids, mask = out["input_ids"][1], out["completion_mask"][1]
    assert len(out["input_ids"]) == 2 and len(ids) == len(mask) > len(words)
    assert mask[0] == 0 and mask[-1] == 1 and 0 < sum(mask) < len(mask)
    assert tokenizer.decode([t for t, m in zip(ids, mask) if m]).startswith("hello you")
    chat_only = replay.tokenize_replay([conv], chatml, tokenizer, 64)
    assert chat_only == {"input_ids": [ids], "completion_mask": [mask]}
    short = replay.tokenize_replay([{"text": "plain words here"}], chatml, tokenizer, 3)
    assert short == {"input_ids": [words[:3]], "completion_mask": [[1, 1, 1]]}
    assert replay.tokenize_replay([], chatml, tokenizer, 64) == {"input_ids": [], "completion_mask": []}


def test_the_draw_leaves_the_global_random_generator_alone():
    random.seed(0)
    state = random.getstate()
    replay._draw(list(range(10)), 25, 4)
    assert random.getstate() == state and replay.REPLAY_FILE == "replay.jsonl"
