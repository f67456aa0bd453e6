"""Templates and tokenization on tiny tokenizers of several families: the trained tokens decode to
exactly the answer + its end markers, generation prompts match the training prompt token for
token, templates survive a save/load, truncation is counted, pad is never eos."""

from __future__ import annotations

import json

import pytest

import tiny_tokenizers as tt
from data_reference import tokenize_example, tokenize_examples
from lmtune.data import (
    Example,
    encode_prompt,
    ensure_pad_token,
    get_template,
    template_from_dict,
)
from data_reference import load_examples
from lmtune.data.templates import TemplateError
from lmtune.run.layout import write_json

ALPACA = {"instruction": "Give the capital of the country.", "input": "Portugal", "output": "Lisbon"}
MULTI_TURN = [{"role": "user", "content": "What is 12 times 12?"}, {"role": "assistant", "content": "144."},
              {"role": "user", "content": "And divided by 3?"}, {"role": "assistant", "content": "48."}]

TOKENIZERS = {
    "llama": tt.llama_style,
    "llama_chat": lambda: tt.llama_style(chat_template=True),
    "gpt2": tt.gpt2_style,
    "qwen": tt.qwen_style,
    "qwen_base": lambda: tt.qwen_style(eos="<|endoftext|>"),
    "marked": tt.marked_style,
}


def _examples(tmp_path, records) -> list[Example]:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    loaded = load_examples([str(path)])
    assert loaded.problems == []
    return loaded.examples


def trained_runs(tokenizer, ids: list[int], mask: list[int]) -> list[str]:
    """Decode each contiguous run of trained tokens."""
    runs, current = [], []
    for token, m in zip(ids + [None], mask + [0]):
        if m:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current, skip_special_tokens=False))
            current = []
    return runs


# (tokenizer, template asked for, template expected after auto, trained text of the alpaca example)
SINGLE_TURN = [
    ("llama", "auto", "alpaca", "Lisbon</s>"),
    ("llama", "chatml", "chatml", "Lisbon<|im_end|></s>"),
    ("llama_chat", "auto", "model", "Lisbon</s>"),  # Llama-2 template, no markers: prefix rendering
    ("gpt2", "auto", "alpaca", "Lisbon<|endoftext|>"),
    ("gpt2", "chatml", "chatml", "Lisbon<|im_end|><|endoftext|>"),
    ("qwen", "auto", "model", "Lisbon<|im_end|>"),  # eos is the end-of-turn token: nothing appended
    ("qwen", "chatml", "chatml", "Lisbon<|im_end|>"),
    ("qwen_base", "auto", "model", "Lisbon<|im_end|><|endoftext|>"),  # base eos appended after the turn
    ("marked", "auto", "model", "Lisbon<|end|>"),  # {% generation %} markers: transformers' mask
    ("marked", "alpaca", "alpaca", "Lisbon<|end|>"),
]


@pytest.mark.parametrize("tok_name,asked,resolved,expected", SINGLE_TURN,
                         ids=[f"{t}-{a}" for t, a, _, _ in SINGLE_TURN])
def test_trained_tokens_are_exactly_the_answer_and_eos(tmp_path, tok_name, asked, resolved, expected):
    tokenizer = TOKENIZERS[tok_name]()
    [example] = _examples(tmp_path, [ALPACA])
    template = get_template(asked, "alpaca", tokenizer)
    assert template.name == resolved
    tok = tokenize_example(example, template, tokenizer, max_length=512)
    assert trained_runs(tokenizer, tok.input_ids, tok.completion_mask) == [expected]
    assert tok.input_ids[-1] == tokenizer.eos_token_id and tok.completion_mask[-1] == 1
    # generation sees exactly the training prompt, token for token
    first = tok.completion_mask.index(1)
    assert encode_prompt(tokenizer, template, example) == tok.input_ids[:first]
    assert encode_prompt(tokenizer, template, {"instruction": ALPACA["instruction"],
                                               "input": ALPACA["input"]}) == tok.input_ids[:first]


MULTI = [
    ("gpt2", "chatml", ["144.<|im_end|>", "48.<|im_end|><|endoftext|>"]),
    ("llama_chat", "model", ["144.</s>", "48.</s>"]),
    ("qwen", "model", ["144.<|im_end|>", "48.<|im_end|>"]),
    ("marked", "model", ["144.<|end|>", "48.<|end|>"]),
]


@pytest.mark.parametrize("tok_name,template_name,expected", MULTI, ids=[m[0] for m in MULTI])
def test_every_assistant_turn_is_trained_and_nothing_else(tmp_path, tok_name, template_name, expected):
    tokenizer = TOKENIZERS[tok_name]()
    [example] = _examples(tmp_path, [{"messages": MULTI_TURN}])
    template = get_template(template_name, "chat", tokenizer)
    tok = tokenize_example(example, template, tokenizer, max_length=512)
    assert trained_runs(tokenizer, tok.input_ids, tok.completion_mask) == expected
    prompt = encode_prompt(tokenizer, template, example)  # the history up to the last answer
    assert tok.input_ids[: len(prompt)] == prompt
    assert tokenizer.decode(tok.input_ids[len(prompt):], skip_special_tokens=False) == expected[-1]


def test_alpaca_layout_is_exact_and_input_block_is_optional():
    template = get_template("alpaca", "alpaca")
    with_input = Example("x:1", "alpaca", fields={"instruction": "I", "input": "N", "output": "O"})
    without = Example("x:2", "alpaca", fields={"instruction": "I", "input": "", "output": "O"})
    assert template.render(with_input) == "### Instruction:\nI\n\n### Input:\nN\n\n### Response:\nO"
    assert template.render(without) == "### Instruction:\nI\n\n### Response:\nO"
    assert template.render_prompt("I") == "### Instruction:\nI\n\n### Response:\n"


def test_chatml_layout_and_system_prompt():
    template = get_template("chatml", "chat", system_prompt="Be brief.")
    example = Example("x:1", "chat", messages=MULTI_TURN[:2])
    assert template.render(example) == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n"
                                        "What is 12 times 12?<|im_end|>\n<|im_start|>assistant\n144.<|im_end|>")
    assert template.render_prompt(MULTI_TURN[:1]).endswith("<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("tok_name,name", [("gpt2", "alpaca"), ("gpt2", "chatml"), ("qwen", "model"),
                                           ("marked", "model")])
def test_template_round_trips_through_template_json(tmp_path, tok_name, name):
    tokenizer = TOKENIZERS[tok_name]()
    [example] = _examples(tmp_path, [ALPACA])
    template = get_template(name, "alpaca", tokenizer, system_prompt="You are terse.")
    path = tmp_path / "run" / "template.json"   # as train.py writes it and inference_loading.py reads it
    path.parent.mkdir()
    write_json(path, template.to_dict())
    tokenizer.chat_template = None  # a changed tokenizer must not change a saved model template
    again = template_from_dict(json.loads(path.read_text(encoding="utf-8")), tokenizer)
    assert again.to_dict() == template.to_dict()
    assert again.render_prompt(example) == template.render_prompt(example)
    assert tokenize_example(example, again, tokenizer, 512) == tokenize_example(example, template, tokenizer, 512)
    assert not list((tmp_path / "run").glob(".template.*"))  # the temp file was renamed, not left


def test_auto_template_choice():
    qwen = tt.qwen_style()
    assert get_template("auto", "alpaca").name == "alpaca"
    assert get_template("auto", "chat").name == "chatml"
    assert get_template("auto", "chat", qwen).name == "model"
    assert get_template("auto", "prompt_completion", qwen).name == "raw"
    assert get_template("chatml", "text", qwen).name == "raw"
    from lmtune.errors import ConfigError

    with pytest.raises(ConfigError, match="has no chat template"):
        get_template("model", "chat", tt.gpt2_style())
    with pytest.raises(ValueError):
        template_from_dict({"name": "model", "chat_template": "x"})


def test_raw_formats_train_completion_or_everything(tmp_path):
    tokenizer = tt.gpt2_style()
    pc = _examples(tmp_path, [{"prompt": "2 + 2 =", "completion": " 4"}])[0]
    text = _examples(tmp_path, [{"text": "The quick brown fox."}])[0]
    raw = get_template("auto", "prompt_completion", tokenizer)
    tok = tokenize_example(pc, raw, tokenizer, 64)
    assert trained_runs(tokenizer, tok.input_ids, tok.completion_mask) == [" 4<|endoftext|>"]
    tok = tokenize_example(text, get_template("auto", "text", tokenizer), tokenizer, 64)
    assert all(tok.completion_mask)
    assert tokenizer.decode(tok.input_ids) == "The quick brown fox.<|endoftext|>"


def test_train_on_prompt_trains_everything(tmp_path):
    tokenizer = tt.llama_style()
    [example] = _examples(tmp_path, [ALPACA])
    tok = tokenize_example(example, get_template("alpaca", "alpaca"), tokenizer, 512, train_on_prompt=True)
    assert set(tok.completion_mask) == {1} and tok.input_ids[0] == tokenizer.bos_token_id


def test_truncation_is_counted_and_answerless_examples_dropped(tmp_path):
    tokenizer = tt.gpt2_style()
    records = [
        {"instruction": "Short.", "output": "The quick brown fox jumps over the lazy dog " * 3},
        {"instruction": "Translate the sentence to French. " * 6, "output": "Le chat."},
        {"instruction": "Hi", "output": "Hello"},
    ]
    examples = _examples(tmp_path, records)
    template = get_template("alpaca", "alpaca")
    full = tokenize_examples(examples, template, tokenizer, max_length=10_000)
    prompt_a = full.completion_mask[0].index(1)
    limit = prompt_a + 3
    assert full.completion_mask[1].index(1) > limit and len(full.input_ids[2]) <= limit
    cut = tokenize_examples(examples, template, tokenizer, max_length=limit)
    stats = cut.stats()
    assert (stats["truncated"], stats["dropped"], stats["examples"]) == (2, 1, 2)
    assert len(cut.input_ids[0]) == limit and sum(cut.completion_mask[0]) == 3
    assert stats["length_max"] == max(full.full_lengths)  # lengths are reported before truncation


def test_template_errors_name_the_example(tmp_path):
    tokenizer = tt.llama_style(chat_template=True)
    examples = _examples(tmp_path, [{"messages": [{"role": "assistant", "content": "Hi"}]}])
    result = tokenize_examples(examples, get_template("model", "chat", tokenizer), tokenizer, 64)
    assert result.problems == [f"{tmp_path / 'd.jsonl'}:1: the conversation starts with an assistant turn; "
                               f"the model's chat template needs a user (or system) turn before it"]
    with pytest.raises(TemplateError, match="one user turn"):
        get_template("alpaca", "chat").segments(Example("x", "chat", messages=MULTI_TURN))


def test_ensure_pad_token_never_pads_with_eos():
    gpt2 = tt.gpt2_style()
    assert gpt2.pad_token is None
    assert ensure_pad_token(gpt2) is True  # added: the model must resize its embeddings
    assert gpt2.pad_token == "<|pad|>" and gpt2.pad_token_id == len(gpt2) - 1 != gpt2.eos_token_id
    llama = tt.llama_style()
    assert ensure_pad_token(llama) is False and llama.pad_token == "<unk>"
    qwen = tt.qwen_style()
    assert ensure_pad_token(qwen) is False and qwen.pad_token == "<|endoftext|>"
    base = tt.qwen_style(eos="<|endoftext|>")  # pad == eos
    assert ensure_pad_token(base) is True and base.pad_token_id != base.eos_token_id
    assert ensure_pad_token(base) is False  # idempotent


def test_render_prompt_accepts_what_generation_has():
    qwen = tt.qwen_style()
    template = get_template("auto", "chat", qwen)
    expected = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert template.render_prompt("hi") == expected
    assert template.render_prompt([{"role": "user", "content": "hi"}]) == expected
    assert template.render_prompt({"messages": [{"role": "user", "content": "hi"}]}) == expected
    assert template.render_prompt({"conversations": [{"from": "human", "value": "hi"}]}) == expected
    assert template.render_prompt({"messages": [{"role": "user", "content": "hi"},
                                                {"role": "assistant", "content": "gold"}]}) == expected
    raw = get_template("auto", "prompt_completion")
    assert raw.render_prompt({"prompt": "2 + 2 ="}) == "2 + 2 ="
    with pytest.raises(TemplateError, match="unknown role"):
        template.render_prompt({"messages": [{"role": "bot", "content": "hi"}]})
