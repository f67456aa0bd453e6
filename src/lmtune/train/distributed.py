"""Several processes, GPUs or machines: launching, who-am-I, and the engine (DDP, FSDP, DeepSpeed).

lmtune runs on the field's engines and adds no parallelism of its own:

    launch     `lmtune train CONFIG --nproc N` re-runs itself under torchrun (torch.distributed.run);
               `accelerate launch -m lmtune train CONFIG` works too (the env tells a worker it runs).
    engine     distributed.backend -> SFTConfig fields (ddp_backend, fsdp/fsdp_config, deepspeed);
               the Trainer and accelerate do the wrapping, sharding and gradient all-reduce.
    once       data is tokenized by the first rank of each machine and cached in the run directory;
               the other ranks read that cache (no race, no duplicated work).
    rank 0     only global rank 0 writes run files (train/recipe.py asks `is_main_process()`).

Why FSDP on CPU is an error, not a warning: transformers/accelerate silently run it as plain DDP
(every rank holds the whole model), so a run that "worked" on CPU says nothing about the memory
FSDP would save. The honest CPU equivalent is backend=ddp; FSDP is for CUDA GPUs.

Module-level imports are standard library only: `lmtune train --help` must not import torch.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shlex
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from lmtune.data import PreparedData, template_from_dict
from lmtune.errors import ConfigError, UserError
from lmtune.run.layout import write_json
from lmtune.train.cpu_tuning import worker_threads
from lmtune.train.processes import (
    set_grad_accum,
    usable_cores,  # noqa: F401  (launch, and train's hint, use it)
)

PRESETS = Path(__file__).parent.parent / "presets"
DEEPSPEED_PRESETS = {"zero2": PRESETS / "deepspeed" / "zero2.json", "zero3": PRESETS / "deepspeed" / "zero3.json"}
DATA_CACHE = ".data_cache"          # inside the run directory; removed when training ends
TIMEOUT = timedelta(seconds=1800)    # the Trainer's ddp_timeout default; rank 0 may tokenize meanwhile
_GLOO_SETTLE_S = 0.1                 # see leave()
INSTALL_DEEPSPEED = ("install it on the GPU machines: pip install deepspeed (it compiles CUDA ops at "
                     "first use, so a CUDA toolkit matching torch must be present)")


# ---------------------------------------------------------------- who am I (env only, no torch)

def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def is_launched() -> bool:
    """True inside a worker started by torchrun, accelerate launch or the deepspeed launcher."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def world_size() -> int:
    return _env_int("WORLD_SIZE", 1) if is_launched() else 1


def rank() -> int:
    return _env_int("RANK", 0) if is_launched() else 0


def local_rank() -> int:
    return _env_int("LOCAL_RANK", 0) if is_launched() else 0


def node_rank() -> int:
    """This machine's index; torchrun sets GROUP_RANK, accelerate's launcher the same via torchrun."""
    local_world = _env_int("LOCAL_WORLD_SIZE", world_size()) or 1
    return _env_int("GROUP_RANK", rank() // local_world)


def is_main_process() -> bool:
    return rank() == 0


def is_local_main_process() -> bool:
    return local_rank() == 0


# ---------------------------------------------------------------- engine choice and checks

def engine_from_env() -> str | None:
    """The engine `accelerate launch --config_file X` selected through its environment variables."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "deepspeed"
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp"
    return None


def resolve_backend(backend: str, world: int) -> str:
    """none + several processes -> ddp; a launcher's engine fills in a config that named none.
    A config and a launcher that disagree is an error (the Trainer would follow the launcher)."""
    env = engine_from_env() if is_launched() else None
    if env and backend not in ("none", env):
        raise ConfigError(f"distributed.backend: the config says {backend!r} but the accelerate config "
                          f"you launched with selects {env!r}",
                          [f"set distributed.backend={env}, or launch with an accelerate config for {backend} "
                           f"(see src/lmtune/presets/accelerate/)"])
    if env:
        return env
    if backend == "none" and world > 1:
        return "ddp"
    return backend


def deepspeed_config_path(value: str | None) -> Path:
    """None -> the shipped ZeRO-2; 'zero2'/'zero3' -> shipped files; otherwise a path."""
    if value is None:
        return DEEPSPEED_PRESETS["zero2"]
    if value in DEEPSPEED_PRESETS:
        return DEEPSPEED_PRESETS[value]
    return Path(value).expanduser()


def deepspeed_config_problems(path: Path, batch_size: int, grad_accum: int) -> list[str]:
    """Sanity of a DeepSpeed JSON without deepspeed installed: it parses, names a ZeRO stage, and
    its batch fields are "auto" or agree with train.* (the Trainer would reject a mismatch late)."""
    key = "distributed.deepspeed_config"
    if not path.is_file():
        return [f"{key}: {path} not found; use zero2, zero3 or the path of a DeepSpeed JSON file"]
    try:
        ds = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return [f"{key}: {path} is not valid JSON ({exc})"]
    if not isinstance(ds, dict):
        return [f"{key}: {path} must hold a JSON object"]
    problems = []
    zero = ds.get("zero_optimization")
    stage = zero.get("stage") if isinstance(zero, dict) else None
    if stage not in (0, 1, 2, 3):
        problems.append(f"{key}: {path}: zero_optimization.stage is {stage!r}, expected 0, 1, 2 or 3")
    for field_name, ours, train_key in (("train_micro_batch_size_per_gpu", batch_size, "train.batch_size"),
                                        ("gradient_accumulation_steps", grad_accum, "train.grad_accum")):
        value = ds.get(field_name, "auto")
        if value != "auto" and value != ours:
            problems.append(f"{key}: {path}: {field_name} is {value!r} but {train_key} is {ours}; "
                            f"set it to \"auto\" so the Trainer fills it in")
    return problems


def engine_problems(cfg, backend: str, device_kind: str) -> list[str]:
    """Everything wrong with running `backend` here, found before any process starts."""
    problems = []
    if backend == "fsdp" and device_kind == "cpu":
        problems.append("distributed.backend: fsdp needs CUDA GPUs; on CPU transformers/accelerate would "
                        "silently run it as DDP (no sharding, every process holds the whole model). "
                        "Use distributed.backend=ddp on CPU, fsdp on GPUs")
    if backend == "deepspeed":
        if device_kind == "cpu":
            problems.append("distributed.backend: deepspeed runs on CUDA GPUs here; use "
                            "distributed.backend=ddp on CPU")
        if importlib.util.find_spec("deepspeed") is None:
            problems.append(f"distributed.backend: deepspeed is not installed; {INSTALL_DEEPSPEED}")
        problems += deepspeed_config_problems(deepspeed_config_path(cfg.distributed.deepspeed_config),
                                              cfg.train.micro_batch(device_kind), cfg.train.grad_accum)
    return problems


def check_engine(cfg, backend: str, device_kind: str) -> None:
    problems = engine_problems(cfg, backend, device_kind)
    if problems:
        n = len(problems)
        raise UserError(f"cannot run distributed.backend={backend} on {device_kind}"
                        f" ({n} problem{'s' if n > 1 else ''})", problems)


def device_kind() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# ---------------------------------------------------------------- launching

def needs_launch(cfg) -> bool:
    """Start workers when asked for several processes, or for an engine that needs a process group."""
    d = cfg.distributed
    return not is_launched() and (d.nproc * d.nnodes > 1 or d.backend in ("fsdp", "deepspeed"))


def torchrun_args(cfg, child_argv: list[str]) -> list[str]:
    """Arguments of `python -m torch.distributed.run` that run `lmtune train <child_argv>` per process.
    One machine: --standalone (a free local port, so two runs on one box never collide)."""
    d = cfg.distributed
    args = [f"--nproc_per_node={d.nproc}", f"--nnodes={d.nnodes}"]
    if d.nnodes == 1:
        args.append("--standalone")
    else:
        args += [f"--node_rank={d.node_rank}", f"--master_addr={d.master_addr}", f"--master_port={d.master_port}"]
    return [*args, "--module", "lmtune", "train", *child_argv]


def check_launch(cfg) -> None:
    """Refuse, before any process starts, what cannot run here (one message, exit 2)."""
    d = cfg.distributed
    kind = device_kind()
    backend = resolve_backend(d.backend, d.nproc * d.nnodes)
    problems = engine_problems(cfg, backend, kind)
    if d.node_rank >= d.nnodes:
        problems.append(f"distributed.node_rank: got {d.node_rank}, must be < distributed.nnodes ({d.nnodes})")
    if kind == "cuda":
        import torch

        gpus = torch.cuda.device_count()
        if d.nproc > gpus:  # NCCL cannot put two ranks on one GPU
            problems.append(f"distributed.nproc: {d.nproc} processes but {gpus} GPU(s) visible; use --nproc {gpus} "
                            f"(one process per GPU) or set CUDA_VISIBLE_DEVICES")
            problems.append(f"to keep the rows per optimizer step, multiply train.grad_accum by the same factor "
                            f"(e.g. --nproc {max(1, gpus)} train.grad_accum={cfg.train.grad_accum * d.nproc // max(1, gpus)})")
    if problems:
        raise UserError(f"cannot start {d.nproc} process(es) x {d.nnodes} machine(s), backend {backend} on {kind}",
                        problems)


def launch(cfg, child_argv: list[str], quiet: bool = False) -> int:
    """Run the workers under torchrun in this process (its agent watches them); returns an exit
    code: 0 ok, 2 when the first failing rank failed on a user error (its message is above), else 1.
    Call `check_launch` first; each worker checks again (`start`), e.g. under accelerate launch."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    d = cfg.distributed
    backend = resolve_backend(d.backend, d.nproc * d.nnodes)
    if device_kind() == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # torchrun would set 1; on CPU each worker may use its share of the cores
        os.environ["OMP_NUM_THREADS"] = str(worker_threads(cfg, d.nproc, usable_cores()))
    args = torchrun_args(cfg, child_argv)
    if not quiet:
        print(f"launching {d.nproc} process(es) x {d.nnodes} machine(s), backend {backend}:\n"
              f"  {shlex.join([sys.executable, '-m', 'torch.distributed.run', *args])}", flush=True)
    try:
        run(parse_args(args))
    except ChildFailedError as exc:
        failed_rank, failure = exc.get_first_failure()
        print(f"error: rank {failed_rank} exited with code {failure.exitcode}; its messages are above",
              file=sys.stderr)
        return 2 if failure.exitcode == 2 else 1
    return 0


# ---------------------------------------------------------------- inside a worker

def start(cfg, device_kind_: str) -> None:
    """First thing a worker does: refuse what cannot run, write the real topology into `cfg`
    (so config.yaml records it), and join the process group used for the barriers below."""
    d = cfg.distributed
    if not is_launched():
        if d.nproc == "auto":  # the Python API starts no workers
            d.nproc = 1
        if d.nproc * d.nnodes > 1 or d.backend in ("fsdp", "deepspeed"):
            raise UserError(f"distributed.backend={d.backend} with {d.nproc * d.nnodes} process(es) needs a "
                            f"launcher, which the Python API does not start",
                            ["run `lmtune train CONFIG --nproc N` (it starts torchrun), or "
                             "`accelerate launch -m lmtune train CONFIG`"])
        set_grad_accum(cfg, 1, device_kind_)
        return
    world = world_size()
    backend = resolve_backend(d.backend, world)
    check_engine(cfg, backend, device_kind_)
    local_world = _env_int("LOCAL_WORLD_SIZE", world) or 1
    d.backend, d.nproc, d.nnodes, d.node_rank = backend, local_world, max(1, world // local_world), node_rank()
    set_grad_accum(cfg, world, device_kind_)
    _init_process_group(device_kind_, backend)


def _init_process_group(device_kind_: str, backend: str) -> None:
    """Join the process group the way TrainingArguments will (it reuses an initialized group)."""
    from accelerate import PartialState

    if device_kind_ == "cpu":
        PartialState(cpu=True, backend="gloo", timeout=TIMEOUT)
        return
    if backend == "deepspeed":  # as TrainingArguments does: accelerate lets deepspeed init its comm
        had = os.environ.get("ACCELERATE_USE_DEEPSPEED")
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        try:
            PartialState(timeout=TIMEOUT)
        finally:
            if had is None:
                del os.environ["ACCELERATE_USE_DEEPSPEED"]
        return
    PartialState(timeout=TIMEOUT)


class RankStopped(UserError):
    """This rank stops because another one failed on a user error (which that rank printed)."""


def _any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any (also a barrier)."""
    if not is_launched():
        return flag
    from accelerate.utils import gather_object

    return any(gather_object([flag]))


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if is_launched():
        from accelerate import PartialState

        PartialState().wait_for_everyone()   # the state `start` initialized


def trainer_arguments(cfg, device_kind_: str) -> dict[str, Any]:
    """SFTConfig fields for the engine; empty for one process."""
    d = cfg.distributed
    if not is_launched():
        return {}
    kwargs: dict[str, Any] = {"ddp_timeout": int(TIMEOUT.total_seconds())}
    if device_kind_ == "cpu":
        kwargs["ddp_backend"] = "gloo"
    if d.backend == "ddp":
        # every trainable tensor gets a gradient each step (LoRA adapters or the whole model), so
        # DDP need not search the graph for unused ones (that search costs a pass per step)
        kwargs["ddp_find_unused_parameters"] = False
    elif d.backend == engine_from_env():
        pass  # started by `accelerate launch` with an FSDP/DeepSpeed config: that config decides
    elif d.backend == "fsdp":
        kwargs["fsdp"] = d.fsdp
        kwargs["fsdp_config"] = fsdp_config(cfg)
    elif d.backend == "deepspeed":
        kwargs["deepspeed"] = str(deepspeed_config_path(d.deepspeed_config))
    return kwargs


def shards_weights(cfg) -> bool:
    """True when no single rank holds the whole model during training (FSDP, DeepSpeed ZeRO-3)."""
    d = cfg.distributed
    if not is_launched():
        return False
    if d.backend == "fsdp":
        return True
    if d.backend == "deepspeed" and engine_from_env() == "deepspeed":
        return os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3"
    if d.backend == "deepspeed":
        try:
            ds = json.loads(deepspeed_config_path(d.deepspeed_config).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return ds.get("zero_optimization", {}).get("stage") == 3
    return False


def fsdp_config(cfg) -> dict[str, Any]:
    """FSDP2 settings for the Trainer: wrap each decoder layer (the model's _no_split_modules) and
    save one full HF-layout state dict (loadable with no lmtune)."""
    return {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP", "state_dict_type": "FULL_STATE_DICT",
            # lmtune loads the model before the Trainer exists, so every rank loads it (RAM x nproc)
            "cpu_ram_efficient_loading": False,
            "reshard_after_forward": True,
            "activation_checkpointing": cfg.train.gradient_checkpointing}


# ---------------------------------------------------------------- data once

def _cache_dir(run_root: Path) -> Path:
    # one cache per machine: machines need not share a filesystem
    return Path(run_root) / DATA_CACHE / f"node{node_rank()}"


def prepare_data_once(run_root: Path, build: Callable[[], Any], create_run: Callable[[], None], tokenizer):
    """One process: build, then create the run directory (a data error leaves no directory).
    Several: the first rank of each machine builds while the others wait; global rank 0 creates the
    run directory; each machine's first rank saves the tokenized data; every rank reads it back,
    so TRL's packing `map` is cached on disk and runs once per machine as well."""
    if world_size() == 1:
        data = build()
        create_run()
        return data
    data, error = None, None
    if is_local_main_process():
        try:
            data = build()
        except UserError as exc:  # bad data: report it here, let the waiting ranks stop quietly
            error = exc
    if _any_rank(error is not None):
        raise error or RankStopped("stopped: another rank reported the problem above")
    if is_main_process():
        create_run()
    barrier()
    if is_local_main_process():
        _save_data(_cache_dir(run_root), data)
    barrier()
    return _load_data(_cache_dir(run_root), tokenizer, data)


def _save_data(path: Path, data) -> None:
    if path.exists():
        shutil.rmtree(path)
    data.train.save_to_disk(str(path / "train"))
    if data.validation is not None:
        data.validation.save_to_disk(str(path / "validation"))
    write_json(path / "template.json", data.template.to_dict())
    write_json(path / "stats.json", data.stats)


def _load_data(path: Path, tokenizer, own=None):
    from datasets import load_from_disk

    train = load_from_disk(str(path / "train"))
    val = load_from_disk(str(path / "validation")) if (path / "validation").is_dir() else None
    if own is not None:  # the rank that built it keeps its own template and stats objects
        return dataclasses.replace(own, train=train, validation=val)
    template = template_from_dict(json.loads((path / "template.json").read_text()), tokenizer)
    stats = json.loads((path / "stats.json").read_text())
    return PreparedData(train=train, validation=val, template=template, stats=stats)


# ---------------------------------------------------------------- end of training

def finish(run_root: Path) -> None:
    """After the last collective (training, the final evaluate): rank 0 drops the data cache once
    its own after-train work is done; every rank leaves the process group. No barrier here: rank 0
    may evaluate and write reports for long after the others are done."""
    if not is_launched():
        return
    if is_main_process():
        shutil.rmtree(Path(run_root) / DATA_CACHE, ignore_errors=True)
    leave()


def leave() -> None:
    """Leave the process group (also on errors: a process exiting inside one aborts)."""
    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        # Gloo's worker threads release the tensors of the last collective on their own, and a
        # tensor that Python created needs the GIL to be freed. The group is finally destroyed
        # when DDP's reducer is deallocated, which joins those threads while holding the GIL: if
        # one is still waiting for it, the process hangs after training (seen once in the
        # two-process resume test). Sleeping releases the GIL, so they finish first.
        time.sleep(_GLOO_SETTLE_S)
        dist.destroy_process_group()
        time.sleep(_GLOO_SETTLE_S)

