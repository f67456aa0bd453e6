"""`lmtune train CONFIG [key=value ...] [--resume] [--nproc N [--nnodes M --node-rank R --master-addr A]]`.

With several processes (or backend fsdp/deepspeed) this command starts torchrun, which runs
`lmtune train` once per process; see lmtune/distributed.py and docs/distributed.md.
"""

from __future__ import annotations

import argparse
import sys

# CLI flag -> config key; a flag that is given overrides the config file
LAUNCH_FLAGS = {"nproc": "distributed.nproc", "nnodes": "distributed.nnodes", "node_rank": "distributed.node_rank",
                "master_addr": "distributed.master_addr", "master_port": "distributed.master_port"}


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (see configs/); `lmtune config show --explain` lists every key")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=1 lora.r=8")
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    parser.add_argument("--output", "-o", help="run directory (same as output.dir=...)")
    group = parser.add_argument_group(
        "several processes or machines",
        "each flag overrides the config's distributed.* key; see docs/distributed.md")
    hide = argparse.SUPPRESS  # absent flag -> the config's value (and no misleading "default: None")
    group.add_argument("--nproc", type=_nproc, metavar="N", default=hide,
                       help="processes on this machine: one per GPU, or CPU worker processes (ddp); "
                            "auto: as distributed.nproc=auto")
    group.add_argument("--nnodes", type=int, metavar="M", default=hide, help="number of machines")
    group.add_argument("--node-rank", type=int, metavar="R", default=hide, help="this machine's index, 0..M-1")
    group.add_argument("--master-addr", metavar="HOST", default=hide, help="address of machine 0 (several machines)")
    group.add_argument("--master-port", type=int, metavar="PORT", default=hide, help="port on machine 0 (several machines)")


def _nproc(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, got {text!r}") from None


def _overrides(args: argparse.Namespace) -> list[str]:
    out = list(args.overrides) + ([f"output.dir={args.output}"] if args.output else [])
    return out + [f"{key}={getattr(args, flag)}" for flag, key in LAUNCH_FLAGS.items()
                  if getattr(args, flag, None) is not None]


def tuning(args: argparse.Namespace):
    """CPU tuning for this process (applied by lmtune/cli.py before torch loads)."""
    from lmtune.config import load_config
    from lmtune.cpu_tuning import Target
    from lmtune.models import resolve_model_path

    cfg = load_config(args.config, _overrides(args))
    return Target(cfg, resolve_model_path(cfg.model.name_or_path), training=True)


def run(args: argparse.Namespace) -> int:
    from lmtune import distributed
    from lmtune.config import load_config

    overrides = _overrides(args)
    cfg = load_config(args.config, overrides)
    if not distributed.is_launched():  # a worker takes its count from the launcher (distributed.start)
        from lmtune.process_count import resolve

        resolve(cfg)
    if distributed.needs_launch(cfg):
        return _launch(args, cfg, overrides)
    from lmtune.errors import UserError
    from lmtune.train import train

    main = distributed.is_main_process()
    try:
        result = train(cfg, resume=args.resume, quiet=not main)
    except UserError as exc:
        distributed.leave()
        if main:
            raise
        if not isinstance(exc, distributed.RankStopped):  # the failing rank prints its own message
            print(f"[rank {distributed.rank()}] {exc.render()}", file=sys.stderr)
        return 2
    if main:
        print(f"run directory: {result.run_dir}")
    return 0


def _launch(args: argparse.Namespace, cfg, overrides: list[str]) -> int:
    """Check what can be checked once (config, run dir, model, engine), then start the workers."""
    from lmtune import distributed
    from lmtune.rundir import RunDir
    from lmtune.train import preflight

    distributed.check_launch(cfg)
    preflight(cfg, RunDir(cfg.output.dir), args.resume)
    child = [args.config, *overrides] + (["--resume"] if args.resume else [])
    if getattr(args, "debug", False):
        child.append("--debug")
    return distributed.launch(cfg, child)
