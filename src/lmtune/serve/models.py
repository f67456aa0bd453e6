"""What the server serves: one model, or several adapters over one base loaded once.

Each served name keeps its own tokenizer and template (the one its run trained with), and shares
the base weights; a request's `model` picks the adapter (peft's set_adapter) before its batch runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.config import Config
from lmtune.errors import UserError
from lmtune.generate import Generator, template_for
from lmtune.inference_loading import load_for_inference, open_path
from lmtune.models import check_adapter_base, load_tokenizer
from lmtune.rag.inference import open_retriever, searcher


@dataclass
class Served:
    name: str
    gen: object                 # lmtune.generate.Generator (model shared between adapters)
    adapter: str | None         # peft adapter name; None: the model as loaded
    context: int                # prompt + answer tokens the model takes
    created: int = field(default_factory=lambda: int(time.time()))
    search: Any = None          # search(question) -> passages (lmtune.rag); None: no retrieval

    def activate(self) -> None:
        if self.adapter is not None:
            self.gen.model.set_adapter(self.adapter)


def served_name(path: str) -> str:
    p = Path(path)
    return p.resolve().name if p.exists() else path


def context_length(model, tokenizer) -> int:
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(getattr(cfg, key, None), int):
            return getattr(cfg, key)
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and limit < 10**7 else 2048


def load_served(paths: list[str]) -> dict[str, Served]:
    """name -> Served. One path: a run, adapter, merged model or base. Several: runs or adapters
    that all sit on the same base, loaded once with one adapter per run."""
    names = [served_name(p) for p in paths]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise UserError(f"two of the served paths have the same name {dupes[0]!r}; a request's model "
                        "field could not tell them apart", ["serve runs whose directories have different names"])
    if len(paths) == 1:
        gen = Generator.load(paths[0])
        adapter = "default" if hasattr(gen.model, "peft_config") else None
        return {names[0]: Served(names[0], gen, adapter, context_length(gen.model, gen.tokenizer))}

    loaded = [open_path(p) for p in paths]
    for path, item in zip(paths, loaded):
        if item.adapter_dir is None:
            raise UserError(f"{path}: has no adapter; several models are served together only as adapters "
                            "over one base", ["serve a full fine-tune or merged model on its own: lmtune serve DIR"])
        if str(item.base_ref) != str(loaded[0].base_ref):
            raise UserError(f"{path}: its base is {item.base_ref}, but {paths[0]}'s is {loaded[0].base_ref}",
                            ["adapters served together must share one base; start one server per base"])
    model, tokenizer = load_for_inference(loaded[0], use_adapter=True)
    out = {}
    for i, (name, item) in enumerate(zip(names, loaded)):
        adapter = "default" if i == 0 else f"adapter{i}"
        if i:
            mcfg = (item.config or Config()).model
            check_adapter_base(item.adapter_dir, item.base_ref, allow_pickle=mcfg.allow_pickle)
            model.load_adapter(str(item.adapter_dir), adapter_name=adapter)
            tokenizer = load_tokenizer(str(item.adapter_dir), mcfg)
        gen = Generator(model, tokenizer, template_for(item, tokenizer))
        out[name] = Served(name, gen, adapter, context_length(model, tokenizer))
    model.eval()
    return out


def add_retrieval(served: dict[str, Served], settings: list) -> None:
    """Each served model retrieves with its settings (lmtune.rag.inference.rag_settings, in the order
    of load_served's paths; None: no retrieval), its passages chunked by its own tokenizer."""
    for item, rag in zip(served.values(), settings):
        if rag is not None:
            item.search = searcher(open_retriever(rag, item.gen.tokenizer), rag.top_k)
