"""tokenize.py and tokenize_batch.py: the batched path equals the per-example reference on every
template kind and on bad examples, the overlap rule at its edges, the statistics' exact numbers,
eos/truncation bookkeeping and the pad-token choice. Tiny tokenizers trained in milliseconds."""

from __future__ import annotations

import pytest

import tiny_tokenizers as tt
from data_reference import TokenizeResult, _overlap_mask, tokenize_example, tokenize_examples
from lmtune.data.formats import Example
from lmtune.data.templates import Rendered, TemplateError, get_template
from lmtune.data.tokenize import (
    NEW_PAD_TOKEN,
    TokenizedExample,
    _percentile,
    count_tokenized,
    encode_prompt,
    ensure_pad_token,
    finish_tokens,
    special_prefix,
    summarize_tokens,
)
from lmtune.data.tokenize_batch import encode_texts, overlap_masks, tokenize_batch


def _alpaca(i: int, instruction: str, output: str, input: str = "") -> Example:
    fields = {"instruction": instruction, "input": input, "output": output}
    user = instruction + (f"\n\n{input}" if input else "")
    return Example(f"a.jsonl:{i}", "alpaca", fields=fields,
                   messages=[{"role": "user", "content": user}, {"role": "assistant", "content": output}])


def _chat(i: int, *turns: tuple[str, str]) -> Example:
    return Example(f"c.jsonl:{i}", "chat", messages=[{"role": r, "content": c} for r, c in turns])


ALPACA = [
    _alpaca(1, "Give the capital of the country.", "Lisbon", "Portugal"),
    _alpaca(2, "Translate the sentence to French. " * 4, "Le chat dort sur le canapé."),
    _alpaca(3, "Hi", "Hello, how are you?"),
]
CHAT = [
    _chat(1, ("user", "What is 12 times 12?"), ("assistant", "144."), ("user", "And divided by 3?"),
          ("assistant", "48.")),
    _chat(2, ("assistant", "I speak first")),          # a model template refuses it
    _chat(3, ("system", "Be brief."), ("user", "Hello"), ("assistant", "Hi. " * 12)),
    _chat(4, ("user", "Write a SQL query"), ("assistant", "SELECT COUNT(*) FROM orders;"), ("user", "thanks")),
    Example("t.jsonl:1", "text", text="A text record has no turns."),   # refused by the model templates
]

CASES = [   # tokenizer, template name, data format, examples
    (tt.gpt2_style, "alpaca", "alpaca", ALPACA),
    (tt.llama_style, "alpaca", "alpaca", ALPACA),          # bos prefix
    (tt.llama_style, "chatml", "chat", CHAT),              # alpaca-less chat, chatml text segments
    (tt.gpt2_style, "alpaca", "chat", CHAT),               # multi-turn: TemplateError per example
    (lambda: tt.llama_style(chat_template=True), "model", "chat", CHAT),   # no markers: segments
    (tt.qwen_style, "model", "chat", CHAT),
    (tt.marked_style, "model", "chat", CHAT),              # {% generation %}: one bad one in the batch
    (tt.marked_style, "model", "chat", [CHAT[0], CHAT[2], CHAT[3]]),   # all good: the batched render
    (tt.marked_style, "model", "alpaca", ALPACA),
]


def _reference(examples, template, tokenizer, max_length, train_on_prompt):
    out = []
    for ex in examples:
        try:
            out.append(tokenize_example(ex, template, tokenizer, max_length, train_on_prompt))
        except TemplateError as exc:
            out.append(str(exc))
    return out


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("max_length,train_on_prompt", [(512, False), (9, False), (12, True)])
def test_batch_equals_the_per_example_reference(case, max_length, train_on_prompt):
    make, name, fmt, examples = CASES[case]
    tokenizer = make()
    template = get_template(name, fmt, tokenizer)
    got = tokenize_batch(examples, template, tokenizer, max_length, train_on_prompt, special_prefix(tokenizer))
    assert got == _reference(examples, template, tokenizer, max_length, train_on_prompt)
    assert any(isinstance(t, TokenizedExample) for t in got)


def test_batch_reports_bad_examples_in_place():
    tokenizer = tt.marked_style()
    template = get_template("model", "chat", tokenizer)
    assert template.has_generation_markers
    got = tokenize_batch(CHAT, template, tokenizer, 512, False, [])
    assert [isinstance(t, str) for t in got] == [False, False, False, False, True]
    assert got[4] == "text records have no turns; use format text (raw)"
    assert [t.source for t in got[:4]] == ["c.jsonl:1", "c.jsonl:2", "c.jsonl:3", "c.jsonl:4"]
    # the last answer of CHAT[3] is followed by a user turn that trains nothing and is cut
    assert tokenizer.decode(got[3].input_ids).endswith("FROM orders;<|end|>")
    gpt2 = tt.gpt2_style()
    alpaca = get_template("alpaca", "chat")
    got = tokenize_batch(CHAT, alpaca, gpt2, 512, False, [])
    assert isinstance(got[0], str) and "one user turn" in got[0] and isinstance(got[2], TokenizedExample)


def test_batch_of_nothing_and_a_batch_with_no_answer_tokens():
    tokenizer = tt.gpt2_style()
    raw = get_template("raw", "prompt_completion")
    assert tokenize_batch([], raw, tokenizer, 8, False, []) == []
    empty = Example("p.jsonl:1", "prompt_completion", messages=[{"role": "user", "content": "2 + 2 ="},
                                                                {"role": "assistant", "content": ""}],
                    fields={"prompt": "2 + 2 =", "completion": ""})
    got = tokenize_batch([empty], raw, tokenizer, 8, False, [])
    assert got == _reference([empty], raw, tokenizer, 8, False)
    assert got == ["no answer tokens: the template marks nothing of this example as trained"]


def test_encode_texts_matches_the_tokenizer_and_skips_the_wrapper():
    tokenizer = tt.gpt2_style()
    texts = ["The quick brown fox.", "", "SELECT name FROM customers;"]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encode_texts(tokenizer, texts)
    assert [list(i) for i in ids] == enc["input_ids"]
    assert [[tuple(o) for o in offs] for offs in offsets] == [[tuple(o) for o in offs]
                                                               for offs in enc["offset_mapping"]]
    llama = tt.llama_style()   # its post-processor adds <s>: never here
    ids, _ = encode_texts(llama, ["Hello"])
    assert llama.bos_token_id not in ids[0] and ids[0] == llama("Hello", add_special_tokens=False)["input_ids"]


def test_encode_texts_leaves_truncation_and_padding_of_the_backend_alone():
    """A backend with truncation or padding configured would cut or pad encode_batch's output; the
    wrapper resets both for its call, so that case must go through the wrapper."""
    texts = ["The quick brown fox jumps over the lazy dog.", "Hi"]
    full = tt.gpt2_style()(texts, add_special_tokens=False)["input_ids"]
    cut = tt.gpt2_style()
    cut.backend_tokenizer.enable_truncation(max_length=3)
    assert encode_texts(cut, texts)[0] == full
    padded = tt.gpt2_style()
    padded.backend_tokenizer.enable_padding(pad_id=0, pad_token="<|endoftext|>")
    assert encode_texts(padded, texts)[0] == full


def test_encode_texts_with_split_special_tokens_follows_the_wrapper():
    texts = ["<|im_start|>user\nhi<|im_end|>"]
    split = tt.qwen_style()
    split.split_special_tokens = True
    expected = split(texts, add_special_tokens=False)["input_ids"]
    assert len(expected[0]) > 5   # the special tokens were split into pieces
    assert [list(i) for i in encode_texts(split, texts)[0]] == expected
    whole = tt.qwen_style()
    assert [list(i) for i in encode_texts(whole, texts)[0]] == whole(texts, add_special_tokens=False)["input_ids"]


def test_overlap_mask_edges():
    offsets = [(0, 2), (2, 4), (4, 4), (4, 6), (6, 9), (9, 10)]
    assert _overlap_mask(offsets, [(4, 9)]) == [0, 0, 0, 1, 1, 0]
    assert _overlap_mask(offsets, [(3, 5)]) == [0, 1, 0, 1, 0, 0]       # partial overlap at both ends
    assert _overlap_mask(offsets, [(0, 2), (9, 10)]) == [1, 0, 0, 0, 0, 1]
    assert _overlap_mask(offsets, [(2, 2), (6, 7)]) == [0, 0, 0, 0, 1, 0]   # an empty span trains nothing
    assert _overlap_mask(offsets, []) == [0] * 6
    for spans in ([(4, 9)], [(3, 5)], [(0, 2), (9, 10)], [(2, 2), (6, 7)], []):
        assert overlap_masks([offsets], [spans], [10], nonempty=True) == [_overlap_mask(offsets, spans)]
    # transformers' rule (nonempty=False) also trains an empty token inside a span
    offsets = [(0, 2), (2, 5), (5, 5), (5, 9), (9, 10)]
    assert overlap_masks([offsets], [[(4, 9)]], [10], nonempty=False) == [[0, 1, 1, 1, 0]]
    assert overlap_masks([offsets], [[(4, 9)]], [10], nonempty=True) == [[0, 1, 0, 1, 0]]


def test_overlap_masks_keep_examples_apart():
    # the second example's span must not train the first example's tokens, and vice versa
    offsets = [[(0, 3), (3, 6)], [], [(0, 3), (3, 6)], [(0, 1)]]
    spans = [[(3, 6)], [(0, 0)], [(0, 3)], []]
    assert overlap_masks(offsets, spans, [6, 0, 6, 1], nonempty=True) == [[0, 1], [], [1, 0], [0]]
    assert overlap_masks([[], []], [[(0, 1)], []], [1, 0], nonempty=True) == [[], []]
    assert overlap_masks([[(0, 2)], [(0, 2)]], [[], []], [2, 2], nonempty=False) == [[0], [0]]
    # a text as long as the shift: tokens at the very end of one text, a span at 0 of the next
    assert overlap_masks([[(0, 2), (2, 4)], [(0, 4)]], [[], [(0, 1)]], [4, 4], nonempty=True) == [[0, 0], [1]]


def test_special_prefix_per_family():
    llama = tt.llama_style()
    assert special_prefix(llama) == [llama.bos_token_id]
    assert special_prefix(tt.gpt2_style()) == []
    assert special_prefix(tt.qwen_style()) == []


def test_finish_tokens_eos_cut_and_truncation():
    tok = finish_tokens([5, 6, 7, 8, 9], [0, 1, 1, 0, 0], 2, 10, False, "s:1")
    assert tok == TokenizedExample([5, 6, 7, 2], [0, 1, 1, 1], 4, "s:1") and not tok.truncated
    tok = finish_tokens([5, 6, 2, 8], [0, 1, 1, 0], 2, 10, False, "s:2")   # ends with eos already
    assert (tok.input_ids, tok.completion_mask, tok.full_length) == ([5, 6, 2], [0, 1, 1], 3)
    tok = finish_tokens([5, 6], [0, 1], None, 10, False, "s:3")   # no eos token
    assert (tok.input_ids, tok.completion_mask) == ([5, 6], [0, 1])
    tok = finish_tokens([5, 6, 7, 8], [0, 0, 1, 0], 2, 3, True, "s:4")
    assert tok == TokenizedExample([5, 6, 7], [1, 1, 1], 4, "s:4") and tok.truncated
    tok = finish_tokens([5, 6, 7], [1, 0, 0], 7, 1, False, "s:5")
    assert tok == TokenizedExample([5], [1], 2, "s:5") and tok.truncated
    assert TokenizedExample([1, 2], [0, 1], 2, "x").truncated is False
    assert TokenizedExample([1, 2], [0, 1], 3, "x").truncated is True
    with pytest.raises(TemplateError, match="^no answer tokens: the template marks nothing"):
        finish_tokens([5, 6], [0, 0], 2, 10, True, "s:6")


def test_count_tokenized_counts_truncated_and_dropped():
    result = TokenizeResult()
    assert count_tokenized(TokenizedExample([1, 2], [0, 1], 2, "a"), result) is True
    assert count_tokenized(TokenizedExample([1, 2], [0, 1], 5, "b"), result) is True
    assert count_tokenized(TokenizedExample([1, 2], [0, 0], 6, "c"), result) is False
    assert (result.full_lengths, result.truncated, result.dropped) == ([2, 5, 6], 2, 1)


def test_tokenize_examples_collects_problems_and_drops_answerless():
    tokenizer = tt.gpt2_style()
    template = get_template("alpaca", "chat")
    examples = [_chat(7, ("user", "Hi"), ("assistant", "Ok")), CHAT[0],
                 _chat(8, ("user", "Translate the sentence to French. " * 3), ("assistant", "Le")),
                 _chat(9, ("user", "Hi"), ("assistant", "Hello. " * 20))]
    result = tokenize_examples(examples, template, tokenizer, max_length=30)
    [message] = _reference([CHAT[0]], template, tokenizer, 30, False)
    assert "one user turn" in message and result.problems == [f"c.jsonl:1: {message}"]
    assert result.sources == ["c.jsonl:7", "c.jsonl:9"]
    assert [len(m) for m in result.completion_mask] == [len(i) for i in result.input_ids]
    assert len(result.input_ids[1]) == 30 and result.completion_mask[1][-1] == 1
    assert result.truncated == 2 and result.dropped == 1 and len(result.full_lengths) == 3
    assert result.full_lengths[0] == len(result.input_ids[0]) and min(result.full_lengths[1:]) > 30
    assert result.stats()["examples"] == 2


def test_summarize_tokens_exact_numbers():
    assert summarize_tokens([], 0, 0, 0, 0, 0) == {"examples": 0, "truncated": 0, "dropped": 0,
                                                   "trained_share": 0.0}
    assert summarize_tokens([3, 4, 7, 10], 3, 20, 7, 2, 1) == {
        "examples": 3, "length_min": 3, "length_median": 5, "length_p95": 10, "length_max": 10,
        "truncated": 2, "dropped": 1, "tokens": 20, "trained_tokens": 7, "trained_share": 0.35}
    assert summarize_tokens([5], 0, 0, 0, 1, 1)["trained_share"] == 0.0
    assert summarize_tokens([1, 2, 3], 3, 3, 1, 0, 0)["trained_share"] == 0.3333
    result = TokenizeResult(input_ids=[[1, 2, 3], [4, 5]], completion_mask=[[0, 1, 1], [0, 1]],
                            full_lengths=[9, 3], truncated=1, dropped=0)
    assert result.stats() == {"examples": 2, "length_min": 3, "length_median": 6, "length_p95": 9,
                                   "length_max": 9, "truncated": 1, "dropped": 0, "tokens": 5,
                                   "trained_tokens": 3, "trained_share": 0.6}


def test_percentile_is_nearest_rank():
    values = list(range(1, 21))   # 1..20
    assert [_percentile(values, q) for q in (95, 50, 5, 100, 1)] == [19, 10, 1, 20, 1]
    assert _percentile([7], 95) == 7 and _percentile([1, 2, 3], 95) == 3 and _percentile([1, 2, 3], 34) == 2


def _tok_with(special: str, eos: str = "<|endoftext|>"):
    backend = tt._byte_level_backend(("<|endoftext|>", special))
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=eos)


@pytest.mark.parametrize("candidate", ["<|pad|>", "<pad>", "[PAD]", "<|finetune_right_pad_id|>", "<|fim_pad|>"])
def test_ensure_pad_token_reuses_each_pad_like_token(candidate):
    tokenizer = _tok_with(candidate)
    size = len(tokenizer)
    assert ensure_pad_token(tokenizer) is False
    assert tokenizer.pad_token == candidate and len(tokenizer) == size


def test_ensure_pad_token_never_takes_eos_and_keeps_a_distinct_pad():
    eos_pad = _tok_with("<pad>", eos="<pad>")   # the only pad-like token is eos: add one
    assert ensure_pad_token(eos_pad) is True and eos_pad.pad_token == NEW_PAD_TOKEN
    qwen = tt.qwen_style()
    assert ensure_pad_token(qwen) is False and qwen.pad_token == "<|endoftext|>"


def test_encode_prompt_prefix_and_rendered():
    llama = tt.llama_style()
    alpaca = get_template("alpaca", "alpaca")
    plain = llama("### Instruction:\nHi\n\n### Response:\n", add_special_tokens=False)["input_ids"]
    assert encode_prompt(llama, alpaca, "Hi") == [llama.bos_token_id] + plain
    shots = Rendered("Q: 1\nA: 2\n\nQ: 3\nA:")
    assert encode_prompt(llama, alpaca, shots) == [llama.bos_token_id] + llama(
        str(shots), add_special_tokens=False)["input_ids"]
    model = get_template("model", "chat", tt.llama_style(chat_template=True))   # writes bos itself
    ids = encode_prompt(llama, model, "Hi")
    assert ids == llama(model.render_prompt("Hi"), add_special_tokens=False)["input_ids"]


def test_a_valid_batch_is_rendered_once_not_example_by_example(monkeypatch):
    """The per-example fallback gives the same tokens, only slower: a valid batch must never take it."""
    tokenizer = tt.marked_style()
    template = get_template("model", "chat", tokenizer)
    good = [CHAT[0], CHAT[2], CHAT[3]]
    expected = _reference(good, template, tokenizer, 512, False)

    def no_single_render(*args, **kwargs):
        raise AssertionError("the batch fell back to rendering example by example")

    monkeypatch.setattr(template, "apply", no_single_render)
    assert tokenize_batch(good, template, tokenizer, 512, False, []) == expected


# a {% generation %} template that writes the tokenizer's eos through a variable, as many models do
EOS_MARKED = tt.MARKED_TEMPLATE.replace("{{ m['content'] }}<|end|>{% endgeneration %}",
                                        "{{ m['content'] }}{{ eos_token }}{% endgeneration %}")


def test_render_with_spans_renders_what_apply_chat_template_does():
    from lmtune.data.templates import ModelTemplate
    from lmtune.data.tokenize_batch import _render_with_spans

    tokenizer = tt.marked_style()
    template = ModelTemplate(tokenizer, chat_template=EOS_MARKED)
    assert template.has_generation_markers and EOS_MARKED != tt.MARKED_TEMPLATE
    conversations = [template.messages_for(ex) for ex in (CHAT[0], CHAT[2])]
    rendered, spans = _render_with_spans(template, conversations)
    assert rendered == [template.apply(c, tokenize=False) for c in conversations]
    assert rendered[0].endswith("48.<|end|>\n") and [len(s) for s in spans] == [2, 1]
    assert [r[a:b] for r, s in zip(rendered, spans) for a, b in s] == ["144.<|end|>", "48.<|end|>", "Hi. " * 12 + "<|end|>"]
    got = tokenize_batch([CHAT[0], CHAT[2]], template, tokenizer, 512, False, [])
    assert got == _reference([CHAT[0], CHAT[2]], template, tokenizer, 512, False)


def test_tokenize_examples_passes_train_on_prompt_and_the_prefix(capsys):
    tokenizer = tt.llama_style()   # a bos prefix
    template = get_template("alpaca", "alpaca")
    for train_on_prompt in (False, True):
        result = tokenize_examples(ALPACA, template, tokenizer, 512, train_on_prompt=train_on_prompt)
        ref = [tokenize_example(ex, template, tokenizer, 512, train_on_prompt) for ex in ALPACA]
        assert result.input_ids == [t.input_ids for t in ref] and result.completion_mask == [t.completion_mask for t in ref]
        assert all(ids[0] == tokenizer.bos_token_id for ids in result.input_ids)
        assert all(all(m) for m in result.completion_mask) == train_on_prompt
    assert capsys.readouterr().err == ""   # no progress bar for a few examples


def test_dropped_examples_are_all_counted():
    result = TokenizeResult()
    for n in range(3):
        assert count_tokenized(TokenizedExample([1, 2], [0, 0], 5 + n, str(n)), result) is False
    assert (result.truncated, result.dropped) == (3, 3)


def test_percentile_rank_on_many_values():
    values = list(range(1, 201))
    assert _percentile(values, 95) == 190 and _percentile(values, 50) == 100 and _percentile(list(range(202)), 50) == 100
    assert summarize_tokens(values, 200, 1, 1, 0, 0)["length_p95"] == 190


def _counting(backend, **kwargs):
    """A real fast tokenizer that counts calls of the transformers wrapper (`tokenizer(...)`)."""
    from transformers import PreTrainedTokenizerFast

    class Counting(PreTrainedTokenizerFast):
        calls = 0

        def __call__(self, *args, **kw):
            type(self).calls += 1
            return super().__call__(*args, **kw)

    return Counting(tokenizer_object=backend, **kwargs)


def test_encode_texts_takes_the_rust_path_only_when_it_is_the_same():
    texts = ["Hello there", "The quick brown fox."]
    llama = _counting(tt._llama_backend(), bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    expected = [llama.backend_tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
    assert encode_texts(llama, texts)[0] == expected and type(llama).calls == 0   # fast path
    llama.backend_tokenizer.enable_truncation(max_length=2)   # configured: the wrapper (no bos, full length)
    assert encode_texts(llama, texts)[0] == expected and type(llama).calls == 1
    llama.backend_tokenizer.no_truncation()
    llama.backend_tokenizer.enable_padding(pad_id=0, pad_token="<unk>")
    assert encode_texts(llama, texts)[0] == expected and type(llama).calls == 2
    special = ["<|im_start|>user\nhi<|im_end|>"]
    split = _counting(tt._byte_level_backend(("<|endoftext|>", "<|im_start|>", "<|im_end|>")), eos_token="<|im_end|>",
                      additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    split.split_special_tokens = True
    split.backend_tokenizer.encode_special_tokens = True   # both agree: the fast path splits them too
    ids, _ = encode_texts(split, special)
    assert type(split).calls == 0 and len(ids[0]) > 5
    assert ids == split(special, add_special_tokens=False)["input_ids"]
    split.backend_tokenizer.encode_special_tokens = False   # they disagree: the wrapper decides
    type(split).calls = 0
    assert encode_texts(split, special)[0] == ids and type(split).calls == 1


def test_masks_are_python_ints():
    tokenizer = tt.marked_style()
    for name in ("model", "chatml"):
        got = tokenize_batch(CHAT[:4], get_template(name, "chat", tokenizer), tokenizer, 512, False, [])
        masks = [t.completion_mask for t in got if not isinstance(t, str)]
        assert masks and all(type(m) is int for mask in masks for m in mask)
