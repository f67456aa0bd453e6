"""lmtune/evaluate/few_shot.py: the shots taken from the training files (skipping held-out ones,
bad records named, bundled tasks, never plain text) and the prompts built from them per template.
The `lmtune eval --few-shot` command: test_eval_few_shot.py."""

from __future__ import annotations

import json

import pytest

from lmtune.config import load_config
from lmtune.data.formats import Example
from lmtune.data.templates import AlpacaTemplate, ChatMLTemplate, ModelTemplate
from lmtune.errors import UserError
from lmtune.evaluate.few_shot import few_shot_prompts, load_shots
from tiny_models import build_tokenizer


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _alpaca(i):
    return {"instruction": f"question {i}", "input": "", "output": f"answer {i}"}


def test_load_shots_takes_the_first_k_skipping_the_held_out_ones(tmp_path):
    train = _write(tmp_path / "train.jsonl", [_alpaca(i) for i in range(5)])
    cfg = load_config(None, [f"data.train={train}", "data.format=alpaca"])
    assert load_shots(cfg, 0) == [] and load_shots(cfg, -1) == []
    assert [s.response for s in load_shots(cfg, 2)] == ["answer 0", "answer 1"]
    held = {ex.content_key() for ex in load_shots(cfg, 2)}
    assert [s.response for s in load_shots(cfg, 3, held)] == ["answer 2", "answer 3", "answer 4"]
    assert [s.response for s in load_shots(cfg, 5)][-1] == "answer 4"
    with pytest.raises(UserError) as info:
        load_shots(cfg, 4, held)
    assert info.value.render() == "error: --few-shot 4: the training data has only 3 usable examples"


def test_bad_training_records_are_reported_as_few_shot_examples(tmp_path):
    from lmtune.errors import DataError

    train = _write(tmp_path / "train.jsonl", [_alpaca(0), {"instruction": "", "input": "", "output": "x"}])
    cfg = load_config(None, [f"data.train={train}", "data.format=alpaca"])
    with pytest.raises(DataError) as info:
        load_shots(cfg, 1)
    assert "in the few-shot examples" in info.value.args[0]


def test_load_shots_from_a_bundled_task_and_never_from_plain_text(tmp_path):
    cfg = load_config(None, ["data.task=sql"])
    assert len(load_shots(cfg, 2)) == 2
    text = _write(tmp_path / "t.jsonl", [{"text": "plain text, no answer"}] * 3)
    cfg = load_config(None, [f"data.train={text}"])
    with pytest.raises(UserError, match="--few-shot 1: the training data has only 0 usable examples"):
        load_shots(cfg, 1)
    cfg.data.train = []  # a config without training data (load_config itself refuses one)
    assert load_shots(cfg, 0) == []  # zero shots reads nothing
    with pytest.raises(UserError) as info:
        load_shots(cfg, 2)
    assert info.value.render() == ("error: --few-shot 2: no training examples to take shots from\n"
                                   "  set data.task (a bundled task) or data.train in the config")


def _ex(q, a, system=None):
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return Example(source="t", format="chat", messages=msgs)


def test_a_chat_shot_loses_its_system_turn_and_the_test_keeps_its_own():
    shots = [_ex("q1", "a1", system="shot system"), _ex("q2", "a2")]
    [prompt] = few_shot_prompts(ChatMLTemplate(), shots, [_ex("q3", "a3", system="test system")])
    assert prompt == ("<|im_start|>system\ntest system<|im_end|>\n"
                      "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
                      "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\na2<|im_end|>\n"
                      "<|im_start|>user\nq3<|im_end|>\n<|im_start|>assistant\n")
    [no_system] = few_shot_prompts(ChatMLTemplate(), shots, [_ex("q3", "a3")])
    assert no_system.startswith("<|im_start|>user\nq1<|im_end|>")
    later = Example(source="t", format="chat", messages=[
        {"role": "user", "content": "first"}, {"role": "system", "content": "mid"},
        {"role": "user", "content": "second"}, {"role": "assistant", "content": "x"}])
    [prompt] = few_shot_prompts(ChatMLTemplate(), shots[1:], [later])
    assert prompt == ("<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\na2<|im_end|>\n"
                      "<|im_start|>user\nfirst<|im_end|>\n<|im_start|>system\nmid<|im_end|>\n"
                      "<|im_start|>user\nsecond<|im_end|>\n<|im_start|>assistant\n")


def test_single_turn_shots_lose_trailing_whitespace_only():
    template = AlpacaTemplate()
    shot = Example(source="t", format="alpaca", messages=[{"role": "user", "content": "q"},
                                                          {"role": "assistant", "content": "  a \n"}],
                   fields={"instruction": "q", "input": "", "output": "  a \n"})
    [prompt] = few_shot_prompts(template, [shot], [_ex("q2", "a2")])
    assert prompt == template.render(shot).rstrip() + "\n\n" + template.render_prompt(_ex("q2", "a2"))
    assert template.render(shot) != template.render(shot).rstrip()


def test_the_models_own_template_also_gets_a_conversation():
    tok = build_tokenizer()
    [prompt] = few_shot_prompts(ModelTemplate(tok), [_ex("q1", "a1")], [_ex("q2", "a2")])
    chat = Example(source="t", format="chat", messages=[{"role": "user", "content": "q1"},
                   {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}])
    assert prompt == ModelTemplate(tok).render_prompt(chat) and prompt.count("q1") == 1
    items = [_ex("q2", "a2")]
    assert few_shot_prompts(AlpacaTemplate(), [], items) == items and few_shot_prompts(AlpacaTemplate(), [], items) is not items
