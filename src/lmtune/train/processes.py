"""How many processes a run starts (`distributed.nproc: auto`) and how many micro-batches each
accumulates (`train.rows_per_step`), so that one config runs unchanged on a CPU, one GPU or several.

    auto on GPUs   one process per visible GPU;
    auto on CPU    one single-threaded worker per usable core for models narrower than hidden size
                   1024 (lmtune/train/cpu_tuning.py ONE_THREAD_BELOW_HIDDEN), else one process with
                   torch's threads; the measurements behind this are in benchmarks/README.md
                   ("CPU tuning") and docs/distributed.md;
    either way     the largest such count that divides train.rows_per_step / train.batch_size, so
                   every optimizer step sees the same rows whatever the machine.

With rows_per_step set, grad_accum = rows_per_step / (batch_size x processes on all machines).
Both values are written into the config (config.yaml records what ran). Standard library only.
"""

from __future__ import annotations

import os

from lmtune.errors import ConfigError
from lmtune.models import resolve_model_path
from lmtune.train.cpu_tuning import ONE_THREAD_BELOW_HIDDEN, model_hidden_size


def usable_cores() -> int:
    """Cores this process may run on (affinity, e.g. taskset or a container's cpuset), not the host's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not on Linux
        return os.cpu_count() or 1


def auto_nproc(cfg, gpus: int, cores: int, hidden_size: int | None) -> int:
    """The process count `auto` stands for on this machine (see the module doc)."""
    if gpus > 0:
        limit = gpus
    elif hidden_size is not None and hidden_size < ONE_THREAD_BELOW_HIDDEN:
        limit = max(1, cores // (cfg.train.threads or 1))
    else:
        limit = 1
    t, nnodes = cfg.train, cfg.distributed.nnodes
    micro = t.micro_batch("cuda" if gpus > 0 else "cpu")
    if t.rows_per_step is None or t.rows_per_step % micro:
        return limit          # nothing to divide (or set_grad_accum reports the remainder)
    units = t.rows_per_step // micro
    fitting = [n for n in range(1, limit + 1) if units % (n * nnodes) == 0]
    return max(fitting) if fitting else limit


def set_grad_accum(cfg, world: int, device_kind: str) -> None:
    """train.grad_accum from train.rows_per_step for `world` processes (no-op when it is unset)."""
    t = cfg.train
    if t.rows_per_step is None:
        return
    micro = t.micro_batch(device_kind)
    if t.rows_per_step % (micro * world):
        raise ConfigError(f"train.rows_per_step: {t.rows_per_step} is not a multiple of train.batch_size x "
                          f"processes ({micro} x {world})",
                          [f"set train.rows_per_step to a multiple of {micro * world}, or change "
                           "train.batch_size or distributed.nproc"])
    t.grad_accum = t.rows_per_step // (micro * world)


def resolve(cfg) -> None:
    """Before deciding whether to launch workers (lmtune/commands/train.py): `auto` -> a count,
    then grad_accum. Imports torch (to count GPUs), so call it after the CPU tuning is applied."""
    import torch

    d = cfg.distributed
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if d.nproc == "auto":
        hidden = model_hidden_size(resolve_model_path(cfg.model.name_or_path), cfg)
        d.nproc = auto_nproc(cfg, gpus, usable_cores(), hidden)
    set_grad_accum(cfg, d.nproc * d.nnodes, "cuda" if gpus > 0 else "cpu")
