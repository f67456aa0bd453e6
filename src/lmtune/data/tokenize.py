"""Examples -> `input_ids` + `completion_mask` (1 = trained: the answer and its eos; 0 = prompt):
the rules and the per-example parts; tokenize_batch.py applies them to batches.

This is the pre-tokenized form TRL's SFTTrainer takes (TRL 1.16, trl/trainer/sft_trainer.py,
`_prepare_dataset`): a dataset that has `input_ids` skips TRL's own tokenization; with
`SFTConfig(completion_only_loss=True)` it builds `labels` = input_ids with -100 wherever
completion_mask is 0 (`build_labels`), drops the mask, and packing keeps `input_ids` + `labels`
(+ `seq_lengths`). Its collator pads labels with -100 and, padding-free, also sets -100 on the
first token of every packed example. `completion_only_loss` must be passed explicitly: its
default (None) only turns on for datasets with prompt/completion columns.

How the mask is found:
  * templates with text segments (alpaca, chatml, raw, model without markers): the full text is
    tokenized once and a token is trained when its characters overlap a trained segment (the
    same rule transformers uses for `return_assistant_tokens_mask`);
  * model templates with `{% generation %}` markers: transformers' own assistant mask.
Tokens after the last trained token train nothing and are dropped; the eos token is appended (and
trained) unless the answer already ends with it. Sequences longer than max_length are cut at the
end, counted, and dropped when no trained token is left.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from lmtune.data.templates import Rendered, Template, TemplateError

# Existing vocabulary entries that are safe padding (never eos); used before adding a new token.
_PAD_CANDIDATES = ("<|pad|>", "<pad>", "[PAD]", "<|finetune_right_pad_id|>", "<|fim_pad|>")
NEW_PAD_TOKEN = "<|pad|>"


def ensure_pad_token(tokenizer: Any) -> bool:
    """Give the tokenizer a pad token distinct from eos (padding with eos would teach nothing about
    eos when pads are masked). Reuses unk or an existing pad-like token when there is one; else
    adds NEW_PAD_TOKEN. Returns True when the vocabulary grew: the model's embeddings must then be
    resized (`model.resize_token_embeddings(len(tokenizer))`)."""
    eos = tokenizer.eos_token_id
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != eos:
        return False
    vocab = tokenizer.get_vocab()
    candidates = [tokenizer.unk_token] if tokenizer.unk_token else []
    for token in [*candidates, *_PAD_CANDIDATES]:
        if token in vocab and vocab[token] != eos:
            tokenizer.pad_token = token
            return False
    tokenizer.add_special_tokens({"pad_token": NEW_PAD_TOKEN})
    return True


def special_prefix(tokenizer: Any) -> list[int]:
    """Ids the tokenizer puts before any text (e.g. Llama's bos); [] for GPT-2 style."""
    probe = "a"
    plain = tokenizer(probe, add_special_tokens=False)["input_ids"]
    full = tokenizer(probe, add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return list(full[:start])
    return []


@dataclass
class TokenizedExample:
    input_ids: list[int]
    completion_mask: list[int]
    full_length: int  # before truncation
    source: str

    @property
    def truncated(self) -> bool:
        return self.full_length > len(self.input_ids)


def finish_tokens(ids: list[int], mask: list[int], eos: int | None, max_length: int, train_on_prompt: bool,
                  source: str) -> TokenizedExample:
    """Drop what follows the last trained token, append eos (trained), truncate at max_length.
    Raises TemplateError when nothing is trained (tokenize_batch.py calls it per example)."""
    if 1 not in mask:
        raise TemplateError("no answer tokens: the template marks nothing of this example as trained")
    last = len(mask) - 1 - mask[::-1].index(1)
    ids, mask = ids[: last + 1], mask[: last + 1]
    if eos is not None and ids[-1] != eos:
        ids, mask = ids + [eos], mask + [1]
    if train_on_prompt:
        mask = [1] * len(ids)
    return TokenizedExample(ids[:max_length], mask[:max_length], len(ids), source)


def count_tokenized(tok: TokenizedExample, result: Any) -> bool:
    """Count one example into `result` (full_lengths, truncated, dropped: token_shards' per-batch
    result); False when truncation left it no trained token (dropped)."""
    result.full_lengths.append(tok.full_length)
    if tok.truncated:
        result.truncated += 1
        if 1 not in tok.completion_mask:
            result.dropped += 1
            return False
    return True


def _percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile (the value at or below which q% of examples fall)."""
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100)
    return sorted_values[int(rank) - 1]


def summarize_tokens(lengths: list[int], examples: int, kept_tokens: int, trained: int, truncated: int,
                     dropped: int) -> dict[str, Any]:
    """The token statistics of data_stats.json; `lengths` sorted, every example before truncation."""
    if not lengths:
        return {"examples": 0, "truncated": 0, "dropped": 0, "trained_share": 0.0}
    return {
        "examples": examples,
        "length_min": lengths[0],
        "length_median": int(statistics.median(lengths)),
        "length_p95": _percentile(lengths, 95),
        "length_max": lengths[-1],
        "truncated": truncated,
        "dropped": dropped,
        "tokens": kept_tokens,
        "trained_tokens": trained,
        "trained_share": round(trained / kept_tokens, 4) if kept_tokens else 0.0,
    }


def encode_prompt(tokenizer: Any, template: Template, item: Any) -> list[int]:
    """Token ids of a generation prompt, built exactly like the prompt part of training data.
    A `Rendered` string (e.g. a few-shot prompt) is already in the template's layout."""
    text = item if isinstance(item, Rendered) else template.render_prompt(item)
    ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return (special_prefix(tokenizer) + ids) if template.add_special_tokens else ids
