"""The list-based data preparation as it was before arrow_pipeline.py (lmtune 2026-11-29, main
ec98085: src/lmtune/data/prepare.py), kept here as the reference the scale pipeline must equal:
every example a Python object, tokenized one at a time by `tokenize_example`."""

from __future__ import annotations

import json

from typing import Any

from lmtune.data.holdout import hold_out
from lmtune.data.prepare import PreparedData, load_split, resolve_files
from lmtune.data.split import conflicting_prompts, dedupe, drop_overlap, split_train_validation
from lmtune.data.templates import Template, get_template
from lmtune.data.tokenize import tokenize_examples
from lmtune.errors import DataError


def reference_prepare(data_cfg, tokenizer: Any, template: Template | None = None) -> PreparedData:
    """Load, validate, dedupe, split and tokenize. `template` None -> built from data_cfg.template
    (auto resolved against the data format and the tokenizer); the one used is in the result.
    Call `ensure_pad_token(tokenizer)` before (models.py), so the run saves the final tokenizer."""
    splits, fmt, stats = _load_and_split(data_cfg)
    held_out = splits.pop("test")
    template = template or get_template(data_cfg.template, fmt, tokenizer, data_cfg.system_prompt)
    stats.update(template=template.name, max_length=data_cfg.max_length,
                 train_on_prompt=data_cfg.train_on_prompt, examples={}, tokens={})
    out = _tokenize_splits(splits, data_cfg, tokenizer, template, stats)
    if not stats["examples"].get("train"):
        raise DataError("no training examples left after truncation",
                        [f"data.max_length: {data_cfg.max_length} leaves no answer token in any example; "
                         f"raise it"])
    return PreparedData(out["train"], out.get("validation"), template, stats, held_out)


def _load_and_split(data_cfg: Any) -> tuple[dict[str, list], str, dict[str, Any]]:
    """Validated, deduplicated train/validation examples, the data format, and first stats."""
    files = resolve_files(data_cfg)
    train = load_split(files["train"], data_cfg.format, "training data")
    val = load_split(files["validation"], data_cfg.format, "validation data") if files["validation"] else None
    if val is not None and val.format != train.format:
        raise DataError("training and validation data have different formats",
                        [f"training files are {train.format}, validation files are {val.format}; "
                         f"use one format for both"])
    stats: dict[str, Any] = {"format": train.format, "files": files, "records": {"train": train.records}}
    train_kept = _dedupe(train.examples, data_cfg.dedupe, stats, "train")
    train_kept, held_out = _hold_out_test(train_kept, files, data_cfg, train.format, stats)
    if val is None:
        train_ex, val_ex = split_train_validation(train_kept, data_cfg.val_split, data_cfg.seed)
        stats["split"] = {"val_split": data_cfg.val_split, "seed": data_cfg.seed}
    else:
        stats["records"]["validation"] = val.records
        train_ex = train_kept
        val_ex, overlap = drop_overlap(_dedupe(val.examples, data_cfg.dedupe, stats, "validation"), train_ex)
        stats["validation_in_train_removed"] = overlap
    stats["conflicting_prompts"] = conflicting_prompts(train_ex)
    stats["warnings"] = _warnings(data_cfg, files, train_ex, val_ex, held_out, stats)
    return {"train": train_ex, "validation": val_ex, "test": held_out}, train.format, stats


def _hold_out_test(train: list, files: dict, data_cfg: Any, fmt: str | None,
                   stats: dict[str, Any]) -> tuple[list, list]:
    """No test files and no bundled task: keep a seeded test split out of training (holdout.py)."""
    from lmtune.data.holdout import heldout_size

    if files["test"] or fmt == "text":   # text has no prompt/answer to score
        return train, []
    size = heldout_size(len(train), data_cfg.test_size)
    stats["test_split"] = {"held_out": size, "of": len(train), "seed": data_cfg.seed}
    return hold_out(train, size, data_cfg.seed)


def _warnings(data_cfg: Any, files: dict, train: list, validation: list, held_out: list,
              stats: dict[str, Any]) -> list[str]:
    from lmtune.data.holdout import prompts_in_train, split_warnings

    if files["test"]:
        test = load_split(files["test"], data_cfg.format, "test data").examples
    else:
        test = held_out
    scoreable = stats.get("format") != "text"   # text has no answers to generate: no test needed
    count = len(test) if (files["test"] or held_out) else (None if scoreable else 0)
    overlap = prompts_in_train(test, train + validation)
    stats["test_prompts_in_train"] = overlap
    return split_warnings(data_cfg, stats, len(validation), count, overlap)


def _tokenize_splits(splits: dict[str, list], data_cfg: Any, tokenizer: Any, template: Template,
                     stats: dict[str, Any]) -> dict[str, Any]:
    import datasets  # light (no torch); only needed here

    out = {}
    for split, examples in splits.items():
        if not examples:
            continue
        tok = tokenize_examples(examples, template, tokenizer, data_cfg.max_length,
                                data_cfg.train_on_prompt, desc=f"tokenizing {split}")
        if tok.problems:
            raise DataError(f"{len(tok.problems)} examples cannot be rendered with template "
                            f"{template.name}", tok.problems)
        stats["examples"][split] = len(tok.input_ids)
        stats["tokens"][split] = tok.stats()
        if tok.input_ids:  # a split emptied by truncation is None, not a 0-row dataset
            out[split] = datasets.Dataset.from_dict({"input_ids": tok.input_ids,
                                                     "completion_mask": tok.completion_mask})
    return out


def _dedupe(examples: list, enabled: bool, stats: dict[str, Any], split: str) -> list:
    if not enabled:
        stats.setdefault("duplicates_removed", {})[split] = 0
        return examples
    result = dedupe(examples)
    stats.setdefault("duplicates_removed", {})[split] = result.removed
    return result.kept


def assert_same_prepared(new: PreparedData, ref: PreparedData, max_length: int | None = None) -> None:
    """The two pipelines' results are equal: stats, held-out examples, template, every split's
    columns and rows, and (given max_length) the rows TRL's bfd packing makes of them."""
    assert new.stats == json.loads(json.dumps(ref.stats))
    assert new.test_examples == ref.test_examples
    assert new.template.to_dict() == ref.template.to_dict()
    for split in ("train", "validation"):
        a, b = getattr(new, split), getattr(ref, split)
        assert (a is None) == (b is None), split
        if a is None:
            continue
        assert a.features == b.features and a.to_dict() == b.to_dict(), split
        if max_length is not None:
            from trl import pack_dataset

            packed_a = pack_dataset(a, max_length, strategy="bfd").to_dict()
            assert packed_a == pack_dataset(b, max_length, strategy="bfd").to_dict(), split
