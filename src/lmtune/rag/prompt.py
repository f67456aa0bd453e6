"""The retrieved passages in the prompt. The one format lives in `augment`: training (rag.docs at
train) and every inference path (generate, serve, eval) call it, so the model reads passages at
inference exactly as it learned to.

    Passages:
    [1] (catalogue/kettle.md) The red kettle costs 40 euros ...
    [2] (catalogue/pot.md) ...

    Question: How much is the red kettle?

No passages: the question unchanged (the prompt a run without retrieval sees).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from lmtune.data.templates import Rendered, as_example


def augment(question: str, passages: list) -> str:
    """The text of the user turn: the passages numbered, then the question."""
    if not passages:
        return question
    lines = ["Passages:"]
    lines += [f"[{i}] ({p.id}) {p.text.strip()}" for i, p in enumerate(passages, 1)]
    return "\n".join(lines) + f"\n\nQuestion: {question}"


def question_of(item: Any) -> str | None:
    """What retrieval searches for: the last user turn of a prompt (a string, a message list, a
    record or an Example); an alpaca record's instruction and input. None: nothing to search for."""
    if isinstance(item, Rendered):   # already rendered (few-shot): its parts are gone
        return None
    if isinstance(item, str):
        return item
    example = as_example(item)
    if example.format == "alpaca":
        return "\n".join(t for t in (example.fields["instruction"], example.fields.get("input", "")) if t)
    users = [m["content"] for m in example.prompt_messages() if m["role"] == "user"]
    return users[-1] if users else None


def with_passages(item: Any, passages: list) -> Any:
    """`item` with its last user turn (an alpaca record: its instruction) replaced by augment()."""
    if not passages or isinstance(item, Rendered):
        return item
    if isinstance(item, str):
        return augment(item, passages)
    if isinstance(item, list):   # a message list stays one (the server's untrusted-text encoding takes it)
        messages = [dict(m) for m in item]
        last = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
        if last is not None:
            messages[last]["content"] = augment(messages[last]["content"], passages)
        return messages
    example = as_example(item)
    messages = [dict(m) for m in example.messages or []]
    last = max((i for i, m in enumerate(example.prompt_messages()) if m["role"] == "user"), default=None)
    if last is None:
        return item
    fields = dict(example.fields)
    if example.format == "alpaca":   # the alpaca template reads the fields, chat templates the messages
        fields["instruction"] = augment(fields["instruction"], passages)
        extra = fields.get("input") or ""
        messages[last]["content"] = fields["instruction"] + (f"\n\n{extra}" if extra.strip() else "")
    else:
        messages[last]["content"] = augment(messages[last]["content"], passages)
        if example.format == "prompt_completion":   # the raw template reads the prompt field
            fields["prompt"] = messages[last]["content"]
    return dataclasses.replace(example, messages=messages, fields=fields)


def augment_item(item: Any, search: Callable[[str], list]) -> tuple[Any, list]:
    """(item with its passages, the passages) for one prompt; `search(question)` finds them."""
    question = question_of(item)
    passages = search(question) if question and question.strip() else []
    return with_passages(item, passages), passages
