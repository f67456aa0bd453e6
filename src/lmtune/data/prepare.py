"""DataConfig -> tokenized train/validation datasets for TRL, plus the numbers worth reporting.

    files -> load + validate (all problems at once) -> dedupe -> split -> template -> tokenize

The returned datasets have exactly the columns `input_ids` and `completion_mask`; train.py gives
them to SFTTrainer with `SFTConfig(completion_only_loss=True)` (see tokenize.py for why). The
steps run in arrow_pipeline.py; `load_split` and `tokenize_files` give small files (a test set,
few-shot shots) as example objects or token rows through the same scan and tokenizer.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmtune.data.arrow_pipeline import PreparedData, prepare_arrow, problem_summary, resolve_files, scan_split
from lmtune.data.formats import LoadedData
from lmtune.data.templates import Template
from lmtune.data.token_shards import load_shards, tokenize_to_arrow

if TYPE_CHECKING:
    from lmtune.config import DataConfig

__all__ = ["PreparedData", "load_split", "prepare_datasets", "problem_summary", "resolve_files", "summary_line",
           "tokenize_files"]


def prepare_datasets(data_cfg: "DataConfig", tokenizer: Any, template: Template | None = None,
                     augment: Any = None) -> PreparedData:
    """Load, validate, dedupe, split and tokenize. `template` None -> built from data_cfg.template
    (auto resolved against the data format and the tokenizer); the one used is in the result.
    `augment` rewrites each example before the template renders it (e.g. rag.training's retrieved
    passages in the prompt; its `key` joins the cache key).
    Call `ensure_pad_token(tokenizer)` before (models.py), so the run saves the final tokenizer.
    The work is done at scale by arrow_pipeline.py (streamed, batched, cached, memory-mapped)."""
    return prepare_arrow(data_cfg, tokenizer, template, augment)


def load_split(paths: list[str], format: str = "auto", what: str = "data") -> LoadedData:
    """The examples of small files (a test set, few-shot shots) as objects, through the pipeline's
    scan; raise DataError listing every problem."""
    with tempfile.TemporaryDirectory(prefix="lmtune-load-") as tmp:
        split = scan_split(paths, format, Path(tmp) / "records.arrow", what)
        examples = split.examples(np.arange(len(split)))
    return LoadedData(examples, split.format, split.records, split.problems, split.files)


def tokenize_files(paths: list[str], format: str, template: Template, tokenizer: Any, max_length: int,
                   train_on_prompt: bool, what: str, name: str) -> list[dict[str, list[int]]]:
    """Rows of `input_ids` + `completion_mask` of small files, tokenized as training data is
    (examples the template cannot render are left out, as in training)."""
    with tempfile.TemporaryDirectory(prefix="lmtune-tokenize-") as tmp:
        split = scan_split(paths, format, Path(tmp) / "records.arrow", what)
        tok = tokenize_to_arrow(split, np.arange(len(split), dtype=np.int64), template, tokenizer, max_length,
                                train_on_prompt, Path(tmp), name)
        data = load_shards(tok.files, in_memory=True)
        return data.to_list() if data is not None else []


def summary_line(stats: dict[str, Any]) -> str:
    """One line on what training will see and what was dropped on the way (duplicates, examples
    truncated at max_length, examples that lost their whole answer), from data_stats.json's numbers."""
    records = stats.get("records", {}).get("train", 0)
    examples = stats.get("examples", {})
    tokens = stats.get("tokens", {}).get("train", {})
    dropped = []
    dup = stats.get("duplicates_removed", {}).get("train", 0)
    if dup:
        dropped.append(f"{dup} duplicate{'s' if dup != 1 else ''} dropped")
    if tokens.get("truncated"):
        cut = f"{tokens['truncated']} truncated at data.max_length {stats.get('max_length')}"
        if tokens.get("dropped"):
            cut += f", {tokens['dropped']} of them dropped (no answer token left)"
        dropped.append(cut)
    val = examples.get("validation", 0)
    line = f"data: {records} training records -> {examples.get('train', 0)} training examples"
    line += f", {val} validation{_validation_note(stats.get('split'))}" if val else ""
    line += f" ({'; '.join(dropped)})" if dropped else ""
    if dropped and examples.get("train", 0) + val < records / 2:
        line += "; fewer than half the records remain: see lmtune data check"
    return line


def _validation_note(split: dict | None) -> str:
    """How an automatic validation split was sized (a user's validation file: nothing to say)."""
    if not split or split.get("max_examples") is None:
        return ""
    cap = f"{'capped at' if split.get('capped') else 'at most'} {split['max_examples']:,}"
    return f" ({100 * split['val_split']:g}% of the data, {cap})"
