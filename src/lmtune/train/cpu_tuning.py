"""CPU tuning for one process, in one place, applied once by the CLI before a command runs.

Three knobs, each a config setting (`lmtune config show --explain` documents them):

    train.omp_wait_policy    OpenMP's OMP_WAIT_POLICY (passive: waiting threads sleep instead of
                             spinning). libgomp reads it when torch loads, so it is set before
                             torch is imported; a value already in the environment wins.
    train.threads            torch's intra-op threads per process. None: one thread for models
                             narrower than ONE_THREAD_BELOW_HIDDEN under passive waiting, else
                             torch's choice. OMP_NUM_THREADS in the environment wins; GPUs keep
                             torch's choice.
    train.keep_freed_memory  training on CPU: glibc keeps freed tensor memory for reuse instead of
                             handing it back to the OS and page-faulting it in again every step
                             (`keep_freed_memory`).

`apply` is called from lmtune/cli.py for the commands that run a model (their `tuning(args)`
names the config and the model); `worker_threads` gives torchrun's workers their share of the
cores (lmtune/train/distributed.py `launch`). Importing lmtune changes nothing in the process: a host
program that calls the Python API keeps its own settings unless it calls `apply` itself.
Why these defaults, with the measurements: benchmarks/README.md ("CPU tuning").
"""

from __future__ import annotations

import ctypes
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from lmtune.config import Config
from lmtune.errors import UserError
from lmtune.inference_loading import open_path

# Below this hidden size one thread beats several passive ones (per-op work too small to share).
ONE_THREAD_BELOW_HIDDEN = 1024


@dataclass(frozen=True)
class Target:
    """What a command runs: its config (train.* holds the knobs) and the model it loads."""
    cfg: Config
    model_ref: str
    training: bool = False     # keep_freed_memory applies to training only


@dataclass(frozen=True)
class Applied:
    wait_policy: str | None    # OMP_WAIT_POLICY in effect (None: libgomp's default)
    threads: int | None        # torch threads set here (None: torch's choice left alone)
    keep_freed_memory: bool    # glibc thresholds raised


def apply(target: Target) -> Applied:
    """Set the three knobs for this process (see the module doc); returns what was set."""
    policy = set_wait_policy(target.cfg.train.omp_wait_policy)
    import torch  # after OMP_WAIT_POLICY: libgomp reads it when torch loads it

    gpu = torch.cuda.is_available()
    threads = default_threads(target.cfg.train.threads, model_hidden_size(target.model_ref, target.cfg),
                              gpu=gpu)
    if threads is not None:
        # this process only: torchrun workers get their share from `worker_threads` instead
        torch.set_num_threads(threads)
    kept = False
    if target.training and not gpu and target.cfg.train.keep_freed_memory:
        kept = keep_freed_memory()
    return Applied(policy, threads, kept)


def set_wait_policy(policy: str) -> str | None:
    """OMP_WAIT_POLICY for this process (and its children) unless set already or torch loaded."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", policy.upper())
    return os.environ.get("OMP_WAIT_POLICY")


def default_threads(threads: int | None, hidden_size: int | None, gpu: bool = False) -> int | None:
    """train.threads, else one thread for narrow models under passive waiting, else None (torch's
    choice): on GPUs, with OMP_NUM_THREADS set, with spinning threads, or when the width is unknown."""
    if threads is not None:
        return threads
    keep = (gpu or "OMP_NUM_THREADS" in os.environ
            or os.environ.get("OMP_WAIT_POLICY", "").upper() != "PASSIVE"
            or hidden_size is None or hidden_size >= ONE_THREAD_BELOW_HIDDEN)
    return None if keep else 1


def worker_threads(cfg: Config, nproc: int, cores: int) -> int:
    """Threads per CPU worker under torchrun (which would set 1): train.threads, else each
    worker's share of the cores."""
    return cfg.train.threads or max(1, cores // nproc)


def model_hidden_size(ref: str, cfg: Config | None = None) -> int | None:
    """The text model's hidden size from its config.json (a local directory, or the Hub cache),
    read without loading torch or weights; None when there is no local config.json."""
    path = Path(ref).expanduser() / "config.json"
    if not path.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(ref, "config.json", revision=cfg.model.revision if cfg else None)
        except (ValueError, OSError):   # not a repo id
            return None
        if not isinstance(cached, str):
            return None
        path = Path(cached)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    for key in ("hidden_size", "n_embd", "d_model"):   # Llama-style, GPT-2, T5-style names
        if isinstance(text.get(key), int):
            return text[key]
    return None


# glibc <malloc.h>: by default glibc serves large allocations with fresh mmap()s (or trims the heap
# top) and returns them on free. A training step frees and re-allocates the same activation-sized
# buffers hundreds of times, so every step page-faults its working set in again and the kernel
# zeroes it. Raising both thresholds keeps those buffers in the process; peak RSS grows by what
# stays cached. The values and the measurements behind them: benchmarks/README.md.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 256 << 20
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Apply the thresholds to this process; True when glibc accepted both (Linux/glibc only)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):   # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))


def target_for_path(path: str) -> Target:
    """eval, generate, merge: the run's config (or the defaults) and the base it loads. A path that
    can't be opened gets the defaults: the command's own checks then say what is wrong with it."""
    try:
        loaded = open_path(path)
    except UserError:
        return Target(Config(), path)
    return Target(loaded.config or Config(), str(loaded.model_dir or loaded.base_ref))
