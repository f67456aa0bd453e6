"""The list-based data preparation as it was before arrow_pipeline.py (lmtune 2026-11-29, main
ec98085: src/lmtune/data/prepare.py), kept here as the reference the scale pipeline must equal:
every example a Python object (load_examples, here), deduplicated and split as lists, tokenized
one at a time by `tokenize_example`. lmtune itself has one pipeline (arrow_pipeline.py); the
list forms of its steps live here only, next to the function that compares the two."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lmtune.data.formats import (Example, LoadedData, _check_schemas, guess_format, other_format_files,
                                  sort_problems, to_example)
from lmtune.data.holdout import hold_out, split_train_validation
from lmtune.data.prepare import PreparedData, problem_summary, resolve_files
from lmtune.data.readers import Record, read_paths
from lmtune.data.templates import ModelTemplate, Template, TemplateError, get_template
from lmtune.data.tokenize import TokenizedExample, count_tokenized, finish_tokens, special_prefix, summarize_tokens
from lmtune.errors import DataError


# The list-based reading the streamed scan (data/records.py) must equal: every record an object.
def load_examples(paths: list[str], format: str = "auto") -> LoadedData:
    """Read, detect, validate and normalise. Never raises on bad data: see `LoadedData.problems`."""
    read = read_paths(paths)
    problems = list(read.problems)
    fmt = format if format != "auto" else _majority_format(read.records)
    examples: list[Example] = []
    skip_files = _check_schemas(read.files, fmt, problems) if fmt else set()
    if format == "auto" and fmt:
        skip_files |= _other_format_files(read.records, fmt, problems)
    for record in read.records:
        if record.file in skip_files:
            continue
        guessed = guess_format(record.value)
        if format == "auto" and guessed is None:
            keys = ", ".join(list(record.value)[:8]) or "none"
            problems.append(f"{record.source}: unknown record format, keys: {keys} (expected instruction/"
                            f"output, messages, conversations, prompt/completion or text)")
            continue
        if format == "auto" and guessed != fmt:
            problems.append(f"{record.source}: mixed formats: this record is {guessed}, most records "
                            f"are {fmt} (use one format per dataset)")
            continue
        example, record_problems = to_example(record, fmt)
        problems += record_problems
        if example is not None:
            examples.append(example)
    records = sum(f.records for f in read.files)
    return LoadedData(examples, fmt, records, sort_problems(problems, read.files), read.files)


def _majority_format(records: list[Record]) -> str | None:
    counts = Counter(g for g in (guess_format(r.value) for r in records) if g)
    return counts.most_common(1)[0][0] if counts else None


def _other_format_files(records: list[Record], fmt: str, problems: list[str]) -> set[str]:
    """A whole file in another format is one problem, not one per record."""
    per_file: dict[str, Counter] = {}
    for r in records:
        per_file.setdefault(r.file, Counter())[guess_format(r.value)] += 1
    return other_format_files(per_file, fmt, problems)


# ---------------------------------------------------------------- loading, dedupe, splits (lists)

def load_split(paths: list[str], format: str = "auto", what: str = "data") -> LoadedData:
    """Load and validate; raise DataError listing every problem."""
    loaded = load_examples(paths, format)
    problems = list(loaded.problems)
    if not problems and not loaded.examples:
        problems.append(f"{', '.join(paths) or '(no files)'}: no {what} examples")
    if problems:
        raise DataError(problem_summary(loaded, what, problems), problems)
    return loaded


@dataclass
class DedupeResult:
    kept: list[Example]
    removed: int  # exact duplicates dropped (content equal up to whitespace)
    first_duplicates: list[tuple[str, str]]  # (duplicate source, source of the copy kept), a few


def dedupe(examples: list[Example], keep_samples: int = 5) -> DedupeResult:
    """Keep the first copy of each example; duplicates are equal after collapsing whitespace."""
    seen: dict[str, str] = {}
    kept, samples = [], []
    for ex in examples:
        key = ex.content_key()
        if key in seen:
            if len(samples) < keep_samples:
                samples.append((ex.source, seen[key]))
            continue
        seen[key] = ex.source
        kept.append(ex)
    return DedupeResult(kept, len(examples) - len(kept), samples)


def drop_overlap(validation: list[Example], train: list[Example]) -> tuple[list[Example], int]:
    """Remove validation examples that also appear in train."""
    train_keys = {ex.content_key() for ex in train}
    kept = [ex for ex in validation if ex.content_key() not in train_keys]
    return kept, len(validation) - len(kept)


def conflicting_prompts(examples: list[Example]) -> int:
    """How many prompts appear with more than one different answer (a sign of noisy labels)."""
    answers: dict[str, set[str]] = {}
    for ex in examples:
        if ex.format != "text":
            answers.setdefault(ex.prompt_key(), set()).add(ex.content_key())
    return sum(1 for a in answers.values() if len(a) > 1)


def prompts_in_train(test: list[Example], train: list[Example]) -> int:
    """How many test examples ask a prompt that the training data also asks."""
    keys = {ex.prompt_key() for ex in train if ex.format != "text"}
    return sum(1 for ex in test if ex.format != "text" and ex.prompt_key() in keys)


# ---------------------------------------------------------------- tokenizing one example at a time

def _overlap_mask(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[int]:
    mask, s = [0] * len(offsets), 0
    for i, (start, end) in enumerate(offsets):
        while s < len(spans) and start >= spans[s][1]:
            s += 1
        if s == len(spans):
            break
        if end > spans[s][0] and end > start:
            mask[i] = 1
    return mask


def _ids_and_mask(example: Example, template: Template, tokenizer: Any, prefix: list[int]
                  ) -> tuple[list[int], list[int]]:
    if isinstance(template, ModelTemplate) and template.has_generation_markers:
        out = template.apply(template.messages_for(example), tokenize=True, return_dict=True,
                             return_assistant_tokens_mask=True)
        return list(out["input_ids"]), list(out["assistant_masks"])
    spans, pos, pieces = [], 0, []
    for seg in template.segments(example):
        if seg.trained:
            spans.append((pos, pos + len(seg.text)))
        pieces.append(seg.text)
        pos += len(seg.text)
    enc = tokenizer("".join(pieces), add_special_tokens=False, return_offsets_mapping=True)
    ids, mask = list(enc["input_ids"]), _overlap_mask(enc["offset_mapping"], spans)
    if template.add_special_tokens:
        ids, mask = prefix + ids, [0] * len(prefix) + mask
    return ids, mask


def tokenize_example(example: Example, template: Template, tokenizer: Any, max_length: int,
                     train_on_prompt: bool = False, prefix: list[int] | None = None) -> TokenizedExample:
    """Raises TemplateError when the template cannot render the example or nothing is trained."""
    prefix = special_prefix(tokenizer) if prefix is None else prefix
    ids, mask = _ids_and_mask(example, template, tokenizer, prefix)
    return finish_tokens(ids, mask, tokenizer.eos_token_id, max_length, train_on_prompt, example.source)


@dataclass
class TokenizeResult:
    input_ids: list[list[int]] = field(default_factory=list)
    completion_mask: list[list[int]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    full_lengths: list[int] = field(default_factory=list)
    truncated: int = 0
    dropped: int = 0
    problems: list[str] = field(default_factory=list)

    def stats(self) -> dict[str, Any]:
        kept_tokens = sum(len(ids) for ids in self.input_ids)
        trained = sum(sum(mask) for mask in self.completion_mask)
        return summarize_tokens(sorted(self.full_lengths), len(self.input_ids), kept_tokens, trained,
                                self.truncated, self.dropped)


def tokenize_examples(examples: list[Example], template: Template, tokenizer: Any, max_length: int,
                      train_on_prompt: bool = False, desc: str = "tokenizing") -> TokenizeResult:
    """Tokenize all examples one at a time; template problems are collected as `source: message`."""
    result, prefix = TokenizeResult(), special_prefix(tokenizer)
    for example in examples:
        try:
            tok = tokenize_example(example, template, tokenizer, max_length, train_on_prompt, prefix)
        except TemplateError as exc:
            result.problems.append(f"{example.source}: {exc}")
            continue
        if not count_tokenized(tok, result):
            continue
        result.input_ids.append(tok.input_ids)
        result.completion_mask.append(tok.completion_mask)
        result.sources.append(tok.source)
    return result


# ---------------------------------------------------------------- the whole preparation


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
        from lmtune.data import holdout

        cap = holdout.VAL_MAX
        train_ex, val_ex = split_train_validation(train_kept, data_cfg.val_split, data_cfg.seed, cap)
        stats["split"] = {"val_split": data_cfg.val_split, "seed": data_cfg.seed, "max_examples": cap,
                          "capped": len(val_ex) < holdout.validation_size(len(train_kept), data_cfg.val_split,
                                                                          None)}
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
    from lmtune.data.holdout import split_warnings

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
