"""/chat's models: a run (its adapter or model) or a run's base, loaded on first use through
lmtune's serve engine (serve/engine.py) with the run's own template, at most MAX_LOADED at a time
(the least recently used one is closed first). A prompt is encoded as `lmtune serve` encodes it
(serve/prompt.py: as `lmtune generate` does, special-token text kept as text), so a greedy answer
is `lmtune generate`'s."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from lmtune.generate import GenerationSettings
from lmtune.serve.engine import Engine, Job
from lmtune.serve.prompt import encode_untrusted, fewest_tokens
from lmtune.ui.newrun import Refused

MAX_LOADED = 2
MAX_PROMPT_CHARS = 16_000
MAX_MESSAGES = 64
MAX_NEW_TOKENS = 1024
WEIGHTS = ("adapter", "model")


def has_weights(root: Path) -> bool:
    return any((root / d).is_dir() for d in WEIGHTS)


class Models:
    """(run name, base?) -> a started Engine serving that one model."""

    def __init__(self):
        self.loaded: OrderedDict[tuple[str, bool], Engine] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, name: str, root: Path, base: bool) -> Engine:
        key = (name, base)
        with self.lock:
            if key in self.loaded:
                self.loaded.move_to_end(key)
                return self.loaded[key]
            while len(self.loaded) >= MAX_LOADED:
                self.loaded.popitem(last=False)[1].close()
            engine = Engine({name: _served(name, root, base)}, max_batch=4)
            self.loaded[key] = engine
            return engine

    def close(self) -> None:
        with self.lock:
            while self.loaded:
                self.loaded.popitem()[1].close()


def _served(name: str, root: Path, base: bool):
    from lmtune.serve.models import Served, context_length, load_served

    if not has_weights(root):
        raise Refused(409, f"{name} has no weights yet (adapter/ or model/ is written when training ends)")
    if not base:
        return _renamed(load_served([str(root)]), name)
    gen = base_generator(root)
    return Served(name, gen, None, context_length(gen.model, gen.tokenizer))


def base_generator(root: Path):
    """The model the run started from, asked through the run's own template. For a LoRA run that
    is its base without the adapter (`lmtune generate RUN --no-adapter`); for a full fine-tune,
    model.name_or_path of its config (its model/ holds the tuned weights)."""
    from dataclasses import replace

    from lmtune.generate import Generator, template_for
    from lmtune.inference_loading import load_for_inference, open_path
    from lmtune.models import resolve_model_path

    loaded = open_path(str(root))
    if loaded.model_dir is not None and loaded.config is not None:
        loaded = replace(loaded, base_ref=resolve_model_path(loaded.config.model.name_or_path), model_dir=None)
    model, tokenizer = load_for_inference(loaded, use_adapter=False)
    return Generator(model, tokenizer, template_for(loaded, tokenizer))


def _renamed(served: dict, name: str):
    one = next(iter(served.values()))
    one.name = name
    return one


def checked_messages(messages: object) -> list[dict]:
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_MESSAGES:
        raise Refused(400, f"messages: a list of 1 to {MAX_MESSAGES} {{role, content}} objects")
    out, chars = [], 0
    for i, m in enumerate(messages):
        if not (isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                and isinstance(m.get("content"), str)):
            raise Refused(400, f"messages[{i}]: expected {{role: system|user|assistant, content: text}}")
        chars += len(m["content"])
        out.append({"role": m["role"], "content": m["content"]})
    if chars > MAX_PROMPT_CHARS:
        raise Refused(413, f"the conversation is {chars:,} characters; the chat takes at most {MAX_PROMPT_CHARS:,}"
                           " (start a new chat)")
    return out


def job_for(engine: Engine, messages: list[dict], max_new_tokens: int) -> Job:
    """Greedy decoding, as `lmtune generate` without --sample; bounded by the model's context."""
    served = next(iter(engine.served.values()))
    chars = sum(len(m["content"]) for m in messages)
    if fewest_tokens(served.gen.tokenizer, chars) >= served.context:
        raise Refused(400, f"the conversation is longer than {served.name}'s context ({served.context} tokens)")
    ids = encode_untrusted(served.gen, messages)
    room = served.context - len(ids)
    if room <= 0:
        raise Refused(400, f"the conversation is {len(ids)} tokens; {served.name} takes {served.context} in all")
    tokens = min(max(1, min(max_new_tokens, MAX_NEW_TOKENS)), room)
    return Job(served.name, ids, tokens, GenerationSettings(greedy=True))
