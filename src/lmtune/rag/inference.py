"""Which retrieval an inference path uses: `--docs DOCS` (with the run's chunk settings and
top_k), else the docs the run trained with (its config's rag.docs), else none; `--no-docs` turns
it off. The documents are read here, before any model loads, so a bad record fails in a second."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from lmtune.config import Config, RagConfig, from_dict, read_yaml
from lmtune.errors import UserError
from lmtune.rag.index import check_documents
from lmtune.rag.retrieve import Retriever


def run_config_of(path: str) -> Config | None:
    """The config a run directory trained with (None for an adapter, a model or a Hub id)."""
    cfg_file = Path(path).expanduser() / "config.yaml"
    return from_dict(read_yaml(cfg_file), str(cfg_file)) if cfg_file.is_file() else None


def rag_settings(run_config: Any, docs: str | None, no_docs: bool = False,
                 top_k: int | None = None, evaluation: bool = False) -> RagConfig | None:
    """The retrieval settings to use, or None for none. `run_config`: the run's Config (None for a
    plain model). evaluation=True (eval, and train's final evaluation): the run's rag.eval_docs comes
    before its rag.docs. Checks the docs (every record) without loading a model."""
    if top_k is not None and top_k < 1:
        raise UserError(f"--top-k: got {top_k}, must be >= 1")
    if no_docs:
        return None
    trained = run_config.rag if run_config is not None else RagConfig()
    key = "rag.eval_docs" if evaluation and trained.eval_docs else "rag.docs"
    default = trained.eval_docs if key == "rag.eval_docs" else trained.docs
    if docs is None and default is None:
        return None
    settings = dataclasses.replace(trained, docs=docs or default, top_k=top_k or trained.top_k)
    if docs is None:
        try:
            check_documents(settings.docs)
        except UserError as exc:
            raise UserError(f"the run retrieves from {key} {settings.docs} by default: {exc.args[0]}",
                            [*exc.problems, "pass --docs DOCS to use other documents, or --no-docs for none"]) from None
    else:
        check_documents(settings.docs)
    return settings


def open_retriever(settings: RagConfig, tokenizer=None) -> Retriever:
    """The index of settings.docs, chunked by the model's tokenizer; one line on stderr saying what."""
    retriever = Retriever.build(settings, tokenizer)
    how = "from the cache" if retriever.cached else "indexed now"
    print(f"retrieval: {len(retriever.chunks):,} passages of {settings.docs} ({how}), top {settings.top_k} "
          "per question", file=sys.stderr)
    return retriever


def searcher(retriever: Retriever | None, k: int):
    """search(question) -> passages, for rag.prompt.augment_item; None without retrieval."""
    return None if retriever is None else (lambda question: retriever.search(question, k))


def sources(passages: list) -> list[dict]:
    """The passages as a response lists them: id, source, chunk, score, text."""
    return [p.to_dict() for p in passages]
