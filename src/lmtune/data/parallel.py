"""Ordered, bounded parallel map over a fork pool, for the data pipeline's CPU-bound passes.

`datasets.map(num_proc=...)` would pickle the tokenizer and template per process and hash them
for its fingerprint; here the workers are forked after the caller has set what they need, the
results come back in input order, and at most `ahead` tasks are in flight, so a producer that
reads a file larger than memory never runs ahead of the consumer (Pool.imap would queue it all).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def ordered_map(fn: Callable[[Any], Any], tasks: Iterable, procs: int, ahead: int | None = None) -> Iterator:
    """fn(task) for each task, in order; in `procs` forked processes when procs > 1 (Linux)."""
    if procs <= 1 or not hasattr(os, "fork"):
        yield from map(fn, tasks)
        return
    import multiprocessing

    ahead = ahead or 2 * procs
    with multiprocessing.get_context("fork").Pool(procs, initializer=_one_thread_tokenizers) as pool:
        pending: deque = deque()
        for task in tasks:
            pending.append(pool.apply_async(fn, (task,)))
            if len(pending) >= ahead:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def _one_thread_tokenizers() -> None:
    """Each worker is one of the parallel units already; the Rust tokenizer must not start its own
    threads there (nor warn that it was forked after the parent used them)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
