"""DataConfig -> memory-mapped train/validation datasets, at any size, cached.

    files --records.scan--> Arrow file of valid records + two hashes per example
          --index arithmetic (numpy)--> dedupe, held-out test, validation split, overlaps
          --token_shards--> Arrow files of input_ids + completion_mask --> datasets (memory-mapped)

The same steps, rules and seeds as the list-based pipeline it replaced (kept as the reference in
tests/data_reference.py): the functions that draw the splits (holdout.py) are called on example
positions instead of examples, so the same seed draws the same examples. Only positions and hashes
are held in memory; a million short records need about 60 MB of them. Results go to lmtune's cache (cache.py) unless data.cache is
false; a second preparation of the same inputs loads them from there.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lmtune.data import cache, holdout
from lmtune.data.formats import Example
from lmtune.data.holdout import heldout_size, hold_out, split_train_validation, split_warnings
from lmtune.data.records import ScannedSplit, scan
from lmtune.data.templates import Template, get_template
from lmtune.data.token_shards import load_shards, tokenize_to_arrow
from lmtune.errors import DataError
from lmtune.run.layout import write_json
from lmtune.tasks import task_files

if TYPE_CHECKING:
    import datasets

    from lmtune.config import DataConfig

STATS, HELDOUT = "stats.json", "heldout.json"


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
        for split, path in task_files(data_cfg.task).items():
            if split in files and not files[split]:
                files[split] = [str(path)]
    return files


def problem_summary(loaded: Any, what: str = "data", problems: list[str] | None = None) -> str:
    """The headline of a DataError over bad records; `loaded` has `records`, `examples` and
    `problems` (a LoadedData). `problems`: the list the error shows, when it has more than
    `loaded.problems` (e.g. "no examples")."""
    bad = loaded.records - len(loaded.examples)
    n = len(loaded.problems if problems is None else problems)
    return (f"{n} problem{'s' if n != 1 else ''} in the {what}: {bad} of {loaded.records} records "
            f"are bad; fix each line below")


def prepare_arrow(data_cfg: "DataConfig", tokenizer: Any, template: Template | None = None,
                  augment: Any = None) -> PreparedData:
    """`augment`: rewrites examples before rendering (token_shards.tokenize_to_arrow); its `key`
    (a str naming everything its output depends on) joins the cache key."""
    files = resolve_files(data_cfg)
    key = cache.data_key(data_cfg, files, tokenizer, template) if data_cfg.cache else None
    if key is not None and augment is not None:
        key = cache.combine_key(key, augment.key)
    entry = cache.lookup(key) if key else None
    if entry is not None:
        print(f"data: prepared data reused from the cache {entry} (data.cache=false rebuilds it)",
              file=sys.stderr)
        return _load(entry, data_cfg, tokenizer, template)
    try:
        build = cache.new_build_dir(key)
    except OSError as exc:   # e.g. a read-only home: prepare without the cache
        print(f"warning: data cache {cache.cache_root()} not writable ({exc}); set LMTUNE_CACHE_DIR",
              file=sys.stderr)
        key, build = None, cache.new_build_dir(None)
    try:
        meta = _build(data_cfg, files, tokenizer, template, build, augment)
        entry = cache.publish(build, key, meta) if key else build
    except BaseException:
        cache.discard(build)
        raise
    if key is None:   # no cache: the files live until this process ends
        atexit.register(cache.discard, build)
    return _load(entry, data_cfg, tokenizer, template)


def _load(entry: Path, data_cfg: "DataConfig", tokenizer: Any, template: Template | None) -> PreparedData:
    stats = json.loads((entry / STATS).read_text())
    held = [Example(**e) for e in json.loads((entry / HELDOUT).read_text())]
    template = template or get_template(data_cfg.template, stats["format"], tokenizer, data_cfg.system_prompt)
    split_files = {s: sorted(str(p) for p in entry.glob(f"{s}-*.arrow")) for s in ("train", "validation")}
    train = load_shards(split_files["train"]) if stats["examples"].get("train") else None
    val = load_shards(split_files["validation"]) if stats["examples"].get("validation") else None
    return PreparedData(train, val, template, stats, held)


def scan_split(paths: list[str], format: str, out: Path, what: str) -> ScannedSplit:
    """Scan and validate; raise DataError listing every problem."""
    split = scan(paths, format, out)
    problems = list(split.problems)
    if not problems and not len(split):
        problems.append(f"{', '.join(paths) or '(no files)'}: no {what} examples")
    if problems:
        raise DataError(problem_summary(_Counts(split), what, problems), problems)
    return split


def check_files(data_cfg: "DataConfig") -> None:
    """Scan and validate the run's files (train, validation, test) without tokenizing, raising the
    DataError training would raise. A launcher calls it so that a bad line fails in a second, before
    its ranks load torch and the model; the scan is read again by the ranks (a second pass over the
    files, cheap next to loading a model on every rank)."""
    files = resolve_files(data_cfg)
    with tempfile.TemporaryDirectory(prefix="lmtune-scan-") as tmp:
        for split, what in (("train", "training data"), ("validation", "validation data"), ("test", "test data")):
            if files[split] or split == "train":
                scan_split(files[split], data_cfg.format, Path(tmp) / f"records-{split}.arrow", what)


@dataclass
class _Counts:   # what problem_summary reads from a LoadedData
    split: ScannedSplit

    @property
    def records(self) -> int:
        return self.split.records

    @property
    def examples(self) -> range:
        return range(len(self.split))

    @property
    def problems(self) -> list[str]:
        return self.split.problems


def _build(data_cfg: "DataConfig", files: dict, tokenizer: Any, template: Template | None, build: Path,
           augment: Any = None) -> dict:
    splits, held, train, stats = _select(data_cfg, files, build)
    template = template or get_template(data_cfg.template, train.format, tokenizer, data_cfg.system_prompt)
    stats.update(template=template.name, max_length=data_cfg.max_length,
                 train_on_prompt=data_cfg.train_on_prompt, examples={}, tokens={})
    if augment is not None:
        stats["augment"] = augment.describe()
    _tokenize(splits, data_cfg, tokenizer, template, stats, build, augment)
    if not stats["examples"].get("train"):
        raise DataError("no training examples left after truncation",
                        [f"data.max_length: {data_cfg.max_length} leaves no answer token in any example; "
                         f"raise it"])
    write_json(build / STATS, stats)
    write_json(build / HELDOUT, [dataclasses.asdict(ex) for ex in train.examples(held)])
    for scratch in build.glob("records-*.arrow"):
        scratch.unlink()
    return {"format": stats["format"], "examples": stats["examples"]}


def _select(data_cfg: "DataConfig", files: dict, build: Path):
    """prepare's load -> dedupe -> hold out -> split, on positions. Returns
    ({split: (ScannedSplit, positions)}, held-out positions in train, train, stats)."""
    train = scan_split(files["train"], data_cfg.format, build / "records-train.arrow", "training data")
    val = scan_split(files["validation"], data_cfg.format, build / "records-validation.arrow",
                     "validation data") if files["validation"] else None
    if val is not None and val.format != train.format:
        raise DataError("training and validation data have different formats",
                        [f"training files are {train.format}, validation files are {val.format}; "
                         f"use one format for both"])
    stats: dict[str, Any] = {"format": train.format, "files": files, "records": {"train": train.records}}
    kept = dedupe_positions(train, data_cfg.dedupe, stats, "train")
    kept, held = _hold_out_test(kept, files, data_cfg, train.format, stats)
    if val is None:
        cap = holdout.VAL_MAX   # read at call time: tests lower it
        t, v = split_train_validation(kept.tolist(), data_cfg.val_split, data_cfg.seed, cap)
        stats["split"] = {"val_split": data_cfg.val_split, "seed": data_cfg.seed, "max_examples": cap,
                          "capped": len(v) < holdout.validation_size(len(kept), data_cfg.val_split, None)}
        splits = {"train": (train, _ints(t)), "validation": (train, _ints(v))}
    else:
        stats["records"]["validation"] = val.records
        v = dedupe_positions(val, data_cfg.dedupe, stats, "validation")
        overlap = np.isin(val.keys[v], train.keys[kept])
        stats["validation_in_train_removed"] = int(overlap.sum())
        splits = {"train": (train, kept), "validation": (val, v[~overlap])}
    stats["conflicting_prompts"] = conflicting_prompts(train, splits["train"][1])
    stats["warnings"] = _warnings(data_cfg, files, splits, train, held, stats, build)
    return splits, held, train, stats


def _ints(values) -> np.ndarray:
    return np.asarray(values, dtype=np.int64)


def dedupe_positions(split: ScannedSplit, enabled: bool, stats: dict, name: str) -> np.ndarray:
    """The first copy of each content key, file order kept."""
    if not enabled or not len(split):
        stats.setdefault("duplicates_removed", {})[name] = 0
        return np.arange(len(split), dtype=np.int64)
    kept = np.sort(np.unique(split.keys, return_index=True)[1]).astype(np.int64)
    stats.setdefault("duplicates_removed", {})[name] = int(len(split) - len(kept))
    return kept


def first_duplicates(split: ScannedSplit, limit: int = 5) -> list[tuple[str, str]]:
    """(source of a duplicate, source of the copy kept) for the first `limit` duplicates."""
    if not len(split):
        return []
    _, first, inverse = np.unique(split.keys, return_index=True, return_inverse=True)
    copies = first[inverse.reshape(-1)]
    dups = np.nonzero(copies != np.arange(len(split)))[0][:limit]
    pairs = split.sources(np.concatenate([dups, copies[dups]]))
    return list(zip(pairs[:len(dups)], pairs[len(dups):]))


def conflicting_prompts(split: ScannedSplit, positions: np.ndarray) -> int:
    """Prompts seen with more than one different answer."""
    if split.format == "text" or not len(positions):
        return 0
    pairs = np.concatenate([split.prompt_keys[positions].view(np.uint64).reshape(-1, 2),
                            split.keys[positions].view(np.uint64).reshape(-1, 2)], axis=1)
    unique_pairs = np.unique(pairs, axis=0)
    _, counts = np.unique(unique_pairs[:, :2], axis=0, return_counts=True)
    return int((counts > 1).sum())


def _hold_out_test(kept: np.ndarray, files: dict, data_cfg: "DataConfig", fmt: str | None,
                   stats: dict) -> tuple[np.ndarray, np.ndarray]:
    if files["test"] or fmt == "text":
        return kept, _ints([])
    size = heldout_size(len(kept), data_cfg.test_size)
    stats["test_split"] = {"held_out": size, "of": len(kept), "seed": data_cfg.seed}
    train, held = hold_out(kept.tolist(), size, data_cfg.seed)
    return _ints(train), _ints(held)


def _warnings(data_cfg: "DataConfig", files: dict, splits: dict, train: ScannedSplit, held: np.ndarray,
              stats: dict, build: Path) -> list[str]:
    """prepare's split warnings, with the test prompts found in train by prompt key."""
    if files["test"]:
        test = scan_split(files["test"], data_cfg.format, build / "records-test.arrow", "test data")
        test_keys, test_format = test.prompt_keys, test.format
    else:
        test_keys, test_format = train.prompt_keys[held], train.format
    scoreable = stats.get("format") != "text"
    count = len(test_keys) if (files["test"] or len(held)) else (None if scoreable else 0)
    seen = [s.prompt_keys[p] for s, p in splits.values()]
    overlap = 0
    if test_format != "text" and train.format != "text" and len(test_keys):
        overlap = int(np.isin(test_keys, np.concatenate(seen)).sum())
    stats["test_prompts_in_train"] = overlap
    return split_warnings(data_cfg, stats, len(splits["validation"][1]), count, overlap)


def _tokenize(splits: dict, data_cfg: "DataConfig", tokenizer: Any, template: Template, stats: dict,
              build: Path, augment: Any = None) -> None:
    for name, (split, positions) in splits.items():
        if not len(positions):
            continue
        result = tokenize_to_arrow(split, positions, template, tokenizer, data_cfg.max_length,
                                   data_cfg.train_on_prompt, build, name, augment=augment)
        if result.problems:
            raise DataError(f"{len(result.problems)} examples cannot be rendered with template "
                            f"{template.name}", result.problems)
        stats["examples"][name] = result.examples
        stats["tokens"][name] = result.stats()
