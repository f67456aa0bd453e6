"""Tokenize many examples at once, with the result of tokenizing each one alone (the reference,
one example at a time, is tests/data_reference.py's `tokenize_example`). Grouping the work:
  * text-segment templates (alpaca, chatml, raw, model without markers): render every example's
    segments in Python, then one call of the fast tokenizer for the whole batch (offsets
    included), then the overlap rule (`overlap_masks`);
  * model templates with `{% generation %}` markers: one Jinja render of the batch with the
    generation spans (transformers' `render_jinja_template`, as `apply_chat_template` calls it),
    one tokenizer call, then transformers' own assistant-mask rule (`overlap_masks`).
A batch that the batched render rejects is redone example by example with apply_chat_template, so
every bad example is reported on its own. tests/data/test_data_scale.py checks the equality.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

import numpy as np

from lmtune.data.formats import Example
from lmtune.data.templates import ModelTemplate, Template, TemplateError
from lmtune.data.tokenize import TokenizedExample, finish_tokens


def tokenize_batch(examples: list[Example], template: Template, tokenizer: Any, max_length: int,
                   train_on_prompt: bool, prefix: list[int]) -> list[TokenizedExample | str]:
    """Per example: its TokenizedExample, or the TemplateError message (a str) when it cannot be
    tokenized, in input order."""
    if isinstance(template, ModelTemplate) and template.has_generation_markers:
        pairs = _generation_batch(examples, template, tokenizer)
    else:
        pairs = _segment_batch(examples, template, tokenizer, prefix)
    eos = tokenizer.eos_token_id
    out: list[TokenizedExample | str] = []
    for example, pair in zip(examples, pairs):
        if isinstance(pair, str):
            out.append(pair)
            continue
        try:
            out.append(finish_tokens(pair[0], pair[1], eos, max_length, train_on_prompt, example.source))
        except TemplateError as exc:
            out.append(str(exc))
    return out


def encode_texts(tokenizer: Any, texts: list[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    """Token ids and character offsets, no special tokens. The Rust tokenizer's `encode_batch`
    directly when the transformers wrapper would call it unchanged (no truncation or padding set,
    special-token splitting as configured): the wrapper's per-token conversion costs as much as
    the tokenizing itself."""
    backend = getattr(tokenizer, "backend_tokenizer", None) if getattr(tokenizer, "is_fast", False) else None
    if backend is not None and backend.truncation is None and backend.padding is None \
            and backend.encode_special_tokens == bool(getattr(tokenizer, "split_special_tokens", False)):
        encodings = backend.encode_batch(texts, add_special_tokens=False)
        return [e.ids for e in encodings], [e.offsets for e in encodings]
    enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], enc["offset_mapping"]


def _segment_batch(examples: list[Example], template: Template, tokenizer: Any, prefix: list[int]
                   ) -> list[tuple[list[int], list[int]] | str]:
    texts, spans, out = [], [], []
    for example in examples:
        try:
            segments = template.segments(example)
        except TemplateError as exc:
            out.append(str(exc))
            continue
        pos, pieces, trained = 0, [], []
        for seg in segments:
            if seg.trained:
                trained.append((pos, pos + len(seg.text)))
            pieces.append(seg.text)
            pos += len(seg.text)
        texts.append("".join(pieces))
        spans.append(trained)
        out.append(None)
    ids, offsets = encode_texts(tokenizer, texts) if texts else ([], [])
    masks = overlap_masks(offsets, spans, [len(t) for t in texts], nonempty=True)
    head = prefix if template.add_special_tokens else []
    k = 0
    for i, item in enumerate(out):
        if item is None:
            out[i] = (head + list(ids[k]), [0] * len(head) + masks[k])
            k += 1
    return out


def _generation_batch(examples: list[Example], template: ModelTemplate, tokenizer: Any
                      ) -> list[tuple[list[int], list[int]] | str]:
    try:
        conversations = [template.messages_for(example) for example in examples]
        rendered, spans = _render_with_spans(template, conversations)
    except Exception:  # a template error somewhere in the batch: find it example by example
        return [_one_generation_pair(example, template) for example in examples]
    ids, offsets = encode_texts(tokenizer, rendered)
    masks = overlap_masks(offsets, spans, [len(t) for t in rendered], nonempty=False)
    return [(list(i), m) for i, m in zip(ids, masks)]


def _render_with_spans(template: ModelTemplate, conversations: list[list[dict]]) -> tuple[list[str], list]:
    """What `apply_chat_template(conversations, tokenize=True, return_assistant_tokens_mask=True)`
    renders (transformers 5: messages normalised, the tokenizer's special tokens as variables)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    # apply_chat_template first normalises messages (objects to dicts, None values dropped): these
    # are already dicts of validated strings, and skipping it saves a fifth of the render time
    tokenizer = template.tokenizer
    rendered, spans = render_jinja_template(
        conversations=conversations, tools=None, documents=None,
        chat_template=template.chat_template, return_assistant_tokens_mask=True,
        continue_final_message=False, add_generation_prompt=False, **tokenizer.special_tokens_map)
    return rendered, spans


def overlap_masks(offsets: list, spans: list, text_lengths: list[int], nonempty: bool) -> list[list[int]]:
    """Per example, 1 for each token that overlaps a trained span, for a whole batch at once.

    The rule of the per-example loops it replaces (tests/data_reference.py's _overlap_mask when `nonempty`, which
    also requires a token to cover a character; else transformers' `assistant_masks` loop): walk the
    tokens with a span pointer that advances past spans ending at or before the token's start and
    never moves back; a token is trained when it ends after the pointed span's start. Here every
    example's positions are shifted past the previous example's text, so one `searchsorted` finds
    each token's first span, and a running maximum is the pointer that never moves back (once an
    example's spans are used up it points at the next example's spans, which start after all its
    tokens end)."""
    counts = [len(o) for o in offsets]
    total = sum(counts)
    if not total:
        return [[] for _ in offsets]
    base = np.cumsum([0] + [n + 1 for n in text_lengths[:-1]])
    flat = np.fromiter(chain.from_iterable(chain.from_iterable(offsets)), dtype=np.int64, count=2 * total)
    shift = np.repeat(base, counts)
    start, end = flat[0::2] + shift, flat[1::2] + shift
    span_start = np.fromiter((a + b for b, ex in zip(base, spans) for a, _ in ex), dtype=np.int64)
    span_end = np.fromiter((e + b for b, ex in zip(base, spans) for _, e in ex), dtype=np.int64)
    if not len(span_start):
        return [[0] * n for n in counts]
    pointer = np.maximum.accumulate(np.searchsorted(span_end, start, side="right"))
    inside = pointer < len(span_start)
    mask = inside & (end > span_start[np.minimum(pointer, len(span_start) - 1)])
    if nonempty:
        mask &= end > start
    flat_mask = mask.astype(np.int8).tolist()
    bounds = np.cumsum([0] + counts).tolist()
    return [flat_mask[bounds[i]:bounds[i + 1]] for i in range(len(counts))]


def _one_generation_pair(example: Example, template: ModelTemplate) -> tuple[list[int], list[int]] | str:
    """One example through apply_chat_template and transformers' own assistant mask; the
    TemplateError message when the template rejects it."""
    try:
        out = template.apply(template.messages_for(example), tokenize=True, return_dict=True,
                             return_assistant_tokens_mask=True)
    except TemplateError as exc:
        return str(exc)
    return list(out["input_ids"]), list(out["assistant_masks"])
