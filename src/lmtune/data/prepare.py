"""DataConfig -> tokenized train/validation datasets for TRL, plus the numbers worth reporting.

    files -> load + validate (all problems at once) -> dedupe -> split -> template -> tokenize

The returned datasets have exactly the columns `input_ids` and `completion_mask`; train.py gives
them to SFTTrainer with `SFTConfig(completion_only_loss=True)` (see tokenize.py for why).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmtune.data.formats import LoadedData, load_examples
from lmtune.data.holdout import hold_out
from lmtune.data.split import conflicting_prompts, dedupe, drop_overlap, split_train_validation
from lmtune.data.templates import Template, get_template
from lmtune.data.tokenize import tokenize_examples
from lmtune.errors import DataError

if TYPE_CHECKING:
    import datasets

    from lmtune.config import DataConfig


@dataclass
class PreparedData:
    train: "datasets.Dataset"
    validation: "datasets.Dataset | None"
    template: Template
    stats: dict[str, Any]  # written to the run as data_stats.json
    test_examples: list = field(default_factory=list)  # held out of train (holdout.py), not tokenized


def resolve_files(data_cfg: "DataConfig") -> dict[str, list[str]]:
    """train/validation/test file lists; a bundled task fills the splits the user left empty."""
    files = {"train": list(data_cfg.train), "validation": list(data_cfg.validation),
             "test": list(data_cfg.test)}
    if data_cfg.task:
        from lmtune.tasks import task_files  # the tasks package owns the bundled files

        for split, path in task_files(data_cfg.task).items():
            if split in files and not files[split]:
                files[split] = [str(path)]
    return files


def load_split(paths: list[str], format: str = "auto", what: str = "data") -> LoadedData:
    """Load and validate; raise DataError listing every problem."""
    loaded = load_examples(paths, format)
    problems = list(loaded.problems)
    if not problems and not loaded.examples:
        problems.append(f"{', '.join(paths) or '(no files)'}: no {what} examples")
    if problems:
        raise DataError(problem_summary(loaded, what), problems)
    return loaded


def problem_summary(loaded: LoadedData, what: str = "data") -> str:
    bad = loaded.records - len(loaded.examples)
    n = len(loaded.problems)
    return (f"{n} problem{'s' if n != 1 else ''} in the {what}: {bad} of {loaded.records} records "
            f"are bad; fix each line below")


def prepare_datasets(data_cfg: "DataConfig", tokenizer: Any, template: Template | None = None
                     ) -> PreparedData:
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


def _load_and_split(data_cfg: "DataConfig") -> tuple[dict[str, list], str, dict[str, Any]]:
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


def _hold_out_test(train: list, files: dict, data_cfg: "DataConfig", fmt: str | None,
                   stats: dict[str, Any]) -> tuple[list, list]:
    """No test files and no bundled task: keep a seeded test split out of training (holdout.py)."""
    from lmtune.data.holdout import heldout_size

    if files["test"] or fmt == "text":   # text has no prompt/answer to score
        return train, []
    size = heldout_size(len(train), data_cfg.test_size)
    stats["test_split"] = {"held_out": size, "of": len(train), "seed": data_cfg.seed}
    return hold_out(train, size, data_cfg.seed)


def _warnings(data_cfg: "DataConfig", files: dict, train: list, validation: list, held_out: list,
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


def _tokenize_splits(splits: dict[str, list], data_cfg: "DataConfig", tokenizer: Any, template: Template,
                     stats: dict[str, Any]) -> dict[str, "datasets.Dataset"]:
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
    line += f", {val} validation" if val else ""
    line += f" ({'; '.join(dropped)})" if dropped else ""
    if dropped and examples.get("train", 0) + val < records / 2:
        line += "; fewer than half the records remain: see lmtune data check"
    return line
