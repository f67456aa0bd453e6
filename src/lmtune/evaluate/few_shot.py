"""Few-shot prompts: K solved training examples shown before each test prompt.

This is the "is prompting enough?" baseline the decision framework asks for: the same test set
scored with K examples in the prompt, so a base model's few-shot score sits next to the tuned
model's. Shots are the first K examples of the training split (deterministic; the bundled task
files are already shuffled), never a test example itself.

Chat templates (chatml, the model's own) get a real multi-turn conversation: each shot is a user
turn and an assistant turn, then the test question. Single-turn layouts (alpaca, raw) get the
shots rendered exactly as training renders them, one after another, then the test prompt.
"""

from __future__ import annotations

from lmtune.data import load_split, resolve_files
from lmtune.data.formats import Example
from lmtune.data.templates import ChatMLTemplate, ModelTemplate, Rendered, Template, as_example
from lmtune.errors import UserError


def load_shots(cfg, k: int, exclude: set[str] | frozenset[str] = frozenset()) -> list[Example]:
    """The first k examples of the run's training data (data.train, else the bundled task's),
    skipping those whose content_key is in `exclude` (a test split held out of data.train)."""
    if k <= 0:
        return []
    paths = resolve_files(cfg.data)["train"]
    if not paths:
        raise UserError(f"--few-shot {k}: no training examples to take shots from",
                        ["set data.task (a bundled task) or data.train in the config"])
    examples = load_split(paths, cfg.data.format, "few-shot examples").examples
    shots = [ex for ex in examples if ex.format != "text" and ex.content_key() not in exclude][:k]
    if len(shots) < k:
        raise UserError(f"--few-shot {k}: the training data has only {len(shots)} usable examples")
    return shots


def few_shot_prompts(template: Template, shots: list[Example], items: list) -> list:
    """Each test item with the shots in front; the items unchanged when there are no shots."""
    if not shots:
        return list(items)
    if isinstance(template, (ChatMLTemplate, ModelTemplate)):
        return [Rendered(template.render_prompt(_conversation(shots, as_example(it)))) for it in items]
    head = "".join(template.render(shot).rstrip() + "\n\n" for shot in shots)
    return [Rendered(head + template.render_prompt(it)) for it in items]


def _conversation(shots: list[Example], example: Example) -> Example:
    """One chat: the test example's system turn (if any), shot question/answer pairs, the question."""
    prompt = example.prompt_messages()
    system = [m for m in prompt[:1] if m["role"] == "system"]
    turns: list[dict[str, str]] = []
    for shot in shots:
        turns += [m for m in shot.prompt_messages() if m["role"] != "system"]
        turns.append({"role": "assistant", "content": shot.response})
    return Example(source=example.source, format="chat",
                   messages=system + turns + prompt[len(system):])
