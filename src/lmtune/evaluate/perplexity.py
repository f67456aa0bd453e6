"""Token-level loss and perplexity of a causal LM, on tokenized examples or on plain text.

Loss is the model's own cross-entropy (transformers' ForCausalLMLoss, the one training uses), summed
over predicted tokens and divided by their count: perplexity = exp(sum NLL / tokens). Batches are
right-padded here regardless of the tokenizer's padding side (generation sets it to left, and left
padding would shift position ids and change the loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

IGNORE = -100


@dataclass
class LossResult:
    loss: float          # mean NLL per predicted token
    perplexity: float
    tokens: int          # predicted (non-masked) tokens
    examples: int

    def to_dict(self) -> dict:
        return {"loss": self.loss, "perplexity": self.perplexity, "tokens": self.tokens,
                "examples": self.examples}


def labels_from_masks(example: dict) -> list[int]:
    """Labels as TRL builds them for training: input_ids with -100 where completion_mask or
    assistant_masks is 0 (lmtune's data pipeline already sets the mask to all ones when
    data.train_on_prompt is on)."""
    if "labels" in example:
        return list(example["labels"])
    labels = list(example["input_ids"])
    for key in ("completion_mask", "assistant_masks"):
        if key in example:
            labels = [tok if m else IGNORE for tok, m in zip(labels, example[key])]
    return labels


def _collate(rows: Sequence[tuple[list[int], list[int]]], pad_id: int):
    import torch
    from torch.nn.utils.rnn import pad_sequence

    ids = pad_sequence([torch.tensor(r[0]) for r in rows], batch_first=True, padding_value=pad_id)
    labels = pad_sequence([torch.tensor(r[1]) for r in rows], batch_first=True, padding_value=IGNORE)
    mask = pad_sequence([torch.ones(len(r[0]), dtype=torch.long) for r in rows], batch_first=True)
    return ids, labels, mask


def sequence_loss(model, rows: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 8,
                  desc: str | None = None) -> LossResult:
    """rows: (input_ids, labels) pairs. Sorted by length so batches waste little padding."""
    import torch

    rows = [r for r in rows if sum(1 for t in r[1][1:] if t != IGNORE) > 0]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    batches: Iterable = range(0, len(order), batch_size)
    if desc:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=desc, unit="batch", leave=False)
    was_training = model.training
    model.eval()
    nll, count = 0.0, 0
    try:
        for start in batches:
            ids, labels, mask = _collate([rows[i] for i in order[start:start + batch_size]], pad_id)
            n = int((labels[:, 1:] != IGNORE).sum())
            with torch.no_grad():
                out = model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device),
                            labels=labels.to(model.device))
            nll += float(out.loss) * n      # the model returns the mean over the n shifted labels
            count += n
    finally:
        model.train(was_training)
    loss = nll / count if count else float("nan")
    return LossResult(loss, _ppl(loss), count, len(rows))


def _ppl(loss: float) -> float:
    if loss != loss:
        return float("nan")
    return math.exp(min(loss, 50.0))   # cap: a diverged model reports e^50, not an overflow


def dataset_loss(model, dataset, pad_id: int, max_length: int, batch_size: int = 8, limit: int | None = None, desc: str | None = None) -> LossResult:
    """Loss on tokenized examples (input_ids + completion_mask/assistant_masks or labels), each
    truncated to `max_length` like training truncates them."""
    rows = []
    for i, ex in enumerate(dataset):
        if limit is not None and i >= limit:
            break
        labels = labels_from_masks(ex)
        rows.append((list(ex["input_ids"])[:max_length], labels[:max_length]))
    return sequence_loss(model, rows, pad_id, batch_size, desc)


def text_loss(model, tokenizer, texts: list[str], max_length: int, batch_size: int = 8,
              desc: str | None = None) -> LossResult:
    """Loss on plain text: every token after the first is predicted."""
    enc = tokenizer(texts, add_special_tokens=True, truncation=True, max_length=max_length)
    rows = [(list(ids), list(ids)) for ids in enc["input_ids"]]
    return sequence_loss(model, rows, tokenizer.pad_token_id, batch_size, desc)
