"""Tokenize a split's examples into Arrow files, in parallel when there are many.

The examples (rows of a `records.ScannedSplit`) are cut into tasks of TASK_SIZE; each task is
tokenized in batches (tokenize_batch.py) and written as one Arrow stream file of `input_ids` and
`completion_mask` (list<int32> and list<int64>: the types `Dataset.from_dict` gives these columns). Dropped and
unrenderable examples are left out, counted and reported as tokenize.py does. With more than one
task and more than one core, a fork pool runs them (`num_proc`): rendering and tokenizing are
CPU-bound Python and Rust, so two cores halve the time; below 2 x TASK_SIZE examples the pool's
start costs more than it saves. The result's `datasets` are memory-mapped, never loaded.
"""

from __future__ import annotations

import os
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lmtune.data.parallel import cores, ordered_map
from lmtune.data.tokenize import count_tokenized, special_prefix, summarize_tokens
from lmtune.data.tokenize_batch import tokenize_batch

TASK_SIZE = 20_000
BATCH = 1_000
_JOB: dict[str, Any] = {}  # what the forked workers need; set just before the pool starts


@dataclass
class ShardResult:
    """What tokenizing a split counts (data_stats.json's token statistics), without the token lists."""

    files: list[str] = field(default_factory=list)
    full_lengths: array = field(default_factory=lambda: array("q"))  # every tokenized example
    examples: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    truncated: int = 0
    dropped: int = 0
    problems: list[str] = field(default_factory=list)
    samples: list[tuple[list[int], list[int], str]] = field(default_factory=list)  # first few kept

    def add(self, other: "ShardResult", keep_samples: int) -> None:
        self.files += other.files
        self.full_lengths += other.full_lengths
        self.examples += other.examples
        self.tokens += other.tokens
        self.trained_tokens += other.trained_tokens
        self.truncated += other.truncated
        self.dropped += other.dropped
        self.problems += other.problems
        self.samples += other.samples[: max(0, keep_samples - len(self.samples))]

    def stats(self) -> dict[str, Any]:
        return summarize_tokens(sorted(self.full_lengths), self.examples, self.tokens, self.trained_tokens,
                                self.truncated, self.dropped)


def num_proc(n: int) -> int:
    """Processes worth starting for n examples on this machine's cores."""
    if n < 2 * TASK_SIZE:
        return 1
    return max(1, min(cores(), -(-n // TASK_SIZE), 8))


def tokenize_to_arrow(split: Any, positions: np.ndarray, template: Any, tokenizer: Any, max_length: int,
                      train_on_prompt: bool, out_dir: Path | None, name: str, keep_samples: int = 0,
                      progress: bool = True, augment: Any = None) -> ShardResult:
    """Tokenize `split`'s examples at `positions` (file order); write `out_dir/NAME-K.arrow`
    (out_dir None: count only, e.g. `lmtune data check`). `augment`: a callable that rewrites a
    batch of examples before the template renders them (retrieved passages in the prompt, see
    lmtune/rag/training.py); it must give the same output for the same example in any process."""
    _JOB.update(split=split, template=template, tokenizer=tokenizer, max_length=max_length,
                train_on_prompt=train_on_prompt, prefix=special_prefix(tokenizer), keep=keep_samples,
                augment=augment)
    tasks = [(positions[i:i + TASK_SIZE], None if out_dir is None else str(out_dir / f"{name}-{k:05d}.arrow"))
             for k, i in enumerate(range(0, len(positions), TASK_SIZE))]
    total, procs = ShardResult(), num_proc(len(positions))
    bar = _progress(len(positions), f"tokenizing {name}", progress)
    try:
        for part in ordered_map(_task, tasks, procs):
            total.add(part, keep_samples)
            bar.update(len(part.full_lengths) + len(part.problems))
    finally:
        bar.close()
        _JOB.clear()
    return total


def tokenize_columns(examples: list, template: Any, tokenizer: Any, max_length: int, train_on_prompt: bool = False,
                     desc: str = "tokenizing") -> dict[str, list]:
    """`input_ids` + `completion_mask` of examples held in memory (e.g. replay's generated records),
    batched like tokenize_to_arrow's tasks; examples that cannot be tokenized are left out."""
    result, prefix = ShardResult(), special_prefix(tokenizer)
    out: dict[str, list] = {"input_ids": [], "completion_mask": []}
    bar = _progress(len(examples), desc, True)
    try:
        for start in range(0, len(examples), BATCH):
            batch = examples[start:start + BATCH]
            tokenized = tokenize_batch(batch, template, tokenizer, max_length, train_on_prompt, prefix)
            ids, masks = _count(batch, tokenized, result, 0)
            out["input_ids"] += ids
            out["completion_mask"] += masks
            bar.update(len(batch))
    finally:
        bar.close()
    return out


def _progress(n: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=n, desc=desc, unit="ex", disable=None if (enabled and n > 2000) else True)


def _task(task: tuple[np.ndarray, str | None]) -> ShardResult:
    positions, path = task
    job, result = _JOB, ShardResult()
    writer = _Writer(path) if path else None
    for start in range(0, len(positions), BATCH):
        examples = job["split"].examples(positions[start:start + BATCH])
        if job["augment"] is not None:
            examples = job["augment"](examples)
        tokenized = tokenize_batch(examples, job["template"], job["tokenizer"], job["max_length"],
                                   job["train_on_prompt"], job["prefix"])
        ids, masks = _count(examples, tokenized, result, job["keep"])
        if writer and ids:
            writer.write(ids, masks)
    if writer:
        result.files.append(writer.close())
    return result


def _count(examples: list, tokenized: list, result: ShardResult, keep: int) -> tuple[list, list]:
    """The bookkeeping of one batch (problems, truncated, dropped, totals, samples); returns the kept
    ids and masks."""
    ids, masks = [], []
    for example, tok in zip(examples, tokenized):
        if isinstance(tok, str):
            result.problems.append(f"{example.source}: {tok}")
            continue
        if not count_tokenized(tok, result):
            continue
        ids.append(tok.input_ids)
        masks.append(tok.completion_mask)
        result.examples += 1
        result.tokens += len(tok.input_ids)
        result.trained_tokens += sum(tok.completion_mask)
        if len(result.samples) < keep:
            result.samples.append((tok.input_ids, tok.completion_mask, tok.source))
    return ids, masks


class _Writer:
    """One Arrow stream file, written batch by batch, renamed into place when complete."""

    def __init__(self, path: str):
        import pyarrow as pa

        self.path, self.tmp = path, path + ".partial"
        self.types = (pa.list_(pa.int32()), pa.list_(pa.int64()))
        self.schema = pa.schema([("input_ids", self.types[0]), ("completion_mask", self.types[1])])
        self.sink = pa.OSFile(self.tmp, "wb")
        self.writer = pa.ipc.new_stream(self.sink, self.schema)

    def write(self, ids: list, masks: list) -> None:
        import pyarrow as pa

        self.writer.write_batch(pa.record_batch([pa.array(ids, self.types[0]), pa.array(masks, self.types[1])],
                                                schema=self.schema))

    def close(self) -> str:
        self.writer.close()
        self.sink.close()
        os.replace(self.tmp, self.path)
        return self.path


def load_shards(files: list[str], in_memory: bool = False):
    """One datasets.Dataset over the shard files (memory-mapped unless in_memory); None if empty."""
    import datasets

    parts = [datasets.Dataset.from_file(f, in_memory=in_memory) for f in files]
    parts = [p for p in parts if len(p)] or parts[:1]
    if not parts or not len(parts[0]):
        return None
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
