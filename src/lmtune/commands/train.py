"""`lmtune train CONFIG [key=value ...] [--resume] [--nproc N [--nnodes M --node-rank R --master-addr A]]`.

`lmtune train --data FILE [key=value ...]` needs no YAML: the embedded base (or
model.name_or_path=...), the auto hyperparameters, and at the end the config it ran, to save.

With several processes (or backend fsdp/deepspeed) this command starts torchrun, which runs
`lmtune train` once per process; see lmtune/train/distributed.py and docs/distributed.md.
"""

from __future__ import annotations

import argparse
import sys

# lmtune's own modules are imported inside the functions below: `lmtune --help` imports every
# command module to build its parser and must stay light (no torch, transformers, yaml).

# CLI flag -> config key; a flag that is given overrides the config file
LAUNCH_FLAGS = {"nproc": "distributed.nproc", "nnodes": "distributed.nnodes", "node_rank": "distributed.node_rank",
                "master_addr": "distributed.master_addr", "master_port": "distributed.master_port"}


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", help="YAML config (see configs/); `lmtune config show --explain` "
                                                  "lists every key. Optional with --data")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=1 lora.r=8")
    parser.add_argument("--data", action="append", metavar="FILE", help="a training file or directory (same as "
                        "data.train=...; repeat for several); "
                        "with no CONFIG: the embedded base, auto hyperparameters, defaults for the rest")
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


def _split_config(args: argparse.Namespace) -> None:
    """`lmtune train --data F train.epochs=2`: argparse takes the first override for CONFIG.
    Idempotent (tuning and run both call it); a config or --data is required."""
    from lmtune.errors import UserError

    if args.config and "=" in args.config and not args.config.endswith((".yaml", ".yml")):
        args.overrides.insert(0, args.config)
        args.config = None
    given = {o.split("=", 1)[0] for o in args.overrides}   # a launched worker gets data.train=[...]
    if not args.config and not getattr(args, "data", None) and not given & {"data.train", "data.task"}:
        raise UserError("lmtune train: give a config file or --data FILE",
                        ["lmtune train configs/tiny-sql-lora.yaml", "lmtune train --data my.jsonl"])


def _overrides(args: argparse.Namespace) -> list[str]:
    import json

    data = [f"data.train={json.dumps(list(args.data))}"] if getattr(args, "data", None) else []
    out = data + list(args.overrides) + ([f"output.dir={args.output}"] if args.output else [])
    return out + [f"{key}={getattr(args, flag)}" for flag, key in LAUNCH_FLAGS.items()
                  if getattr(args, flag, None) is not None]


def tuning(args: argparse.Namespace):
    """CPU tuning for this process (applied by lmtune/cli.py before torch loads). The data paths and
    the model source are checked here, the first moment the config is known: a FIFO, a device or a
    missing model fails in a second, not after torch has loaded. (A resumed run, which may be finished
    already, and a launched worker, whose launcher checked, leave the model to recipe.preflight.)"""
    from lmtune.checks import data_paths
    from lmtune.config import load_config
    from lmtune.run import start
    from lmtune.train import distributed
    from lmtune.train.cpu_tuning import Target
    from lmtune.models import resolve_model_path

    _split_config(args)
    cfg = load_config(args.config, _overrides(args))
    data_paths(cfg)
    if not args.resume and not distributed.is_launched():
        start.check_source(cfg.model)
    return Target(cfg, resolve_model_path(cfg.model.name_or_path), training=True)


def run(args: argparse.Namespace) -> int:
    from lmtune.config import load_config
    from lmtune.errors import UserError
    from lmtune.run import process_record

    _split_config(args)
    overrides = _overrides(args)
    cfg = load_config(args.config, overrides)
    process_record.set_command(command_line(args))
    code = 1
    try:
        code = _run(args, cfg, overrides)
    except UserError:
        code = 2
        raise
    finally:  # into the run's process.json, when this process wrote it (run/process_record.py)
        _record_end(cfg, code)
    return code


def _current_progress():
    """The training progress bar's last state, None before training began. Read from the module
    only if training imported it: importing it here would load transformers and peft (3 s) just to
    learn that a run which failed its checks has no progress."""
    callbacks = sys.modules.get("lmtune.train.callbacks")
    return callbacks.ConsoleProgress.current if callbacks is not None else None


def _take_progress():
    """The progress bar's last state, cleared (a later run in this process starts with none)."""
    progress = _current_progress()
    if progress is not None:
        sys.modules["lmtune.train.callbacks"].ConsoleProgress.current = None
    return progress


def _record_end(cfg, code: int) -> None:
    from lmtune.run import process_record

    progress = _take_progress()
    state = {0: "finished", 130: "interrupted"}.get(code, "failed")
    process_record.ended(cfg.output.dir, state, code, progress.step if progress is not None else None)


def _run(args: argparse.Namespace, cfg, overrides: list[str]) -> int:
    from lmtune.train import distributed

    if not distributed.is_launched():  # a worker takes its count from the launcher (distributed.start)
        from lmtune.train.processes import resolve

        resolve(cfg)
    if distributed.needs_launch(cfg):
        try:
            return _launch(args, cfg, overrides)
        except KeyboardInterrupt:  # torchrun stops the workers; the checkpoints say where they were
            print(interrupted_message(args, cfg), file=sys.stderr)
            return 130
    from lmtune.errors import UserError
    from lmtune.train.recipe import train

    _take_progress()   # set again when training starts: the Ctrl-C message needs to know
    main = distributed.is_main_process()
    try:
        result = train(cfg, resume=args.resume, quiet=not main)
    except KeyboardInterrupt:
        if main:
            print(interrupted_message(args, cfg), file=sys.stderr)
        return 130
    except UserError as exc:
        distributed.leave()
        if main:
            raise
        if not isinstance(exc, distributed.RankStopped):  # the failing rank prints its own message
            print(f"[rank {distributed.rank()}] {exc.render()}", file=sys.stderr)
        return 2
    if main:
        if not args.config:
            _print_config(cfg, result.run_dir)
        print(f"run directory: {result.run_dir}")
    return 0


def resume_command(args: argparse.Namespace) -> str:
    """The command line that continues this run: the same config, overrides and flags, plus --resume."""
    import shlex

    return shlex.join(_argv(args) + ["--resume"])


def command_line(args: argparse.Namespace) -> list[str]:
    """This command as given: its config or --data, overrides and flags."""
    return _argv(args) + (["--resume"] if args.resume else [])


def _argv(args: argparse.Namespace) -> list[str]:
    source = [args.config] if args.config else [a for d in args.data or [] for a in ("--data", d)]
    argv = ["lmtune", "train", *source, *args.overrides]
    if args.output:
        argv += ["--output", args.output]
    for flag in LAUNCH_FLAGS:
        if getattr(args, flag, None) is not None:
            argv += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
    return argv


def interrupted_message(args: argparse.Namespace, cfg) -> str:
    """Ctrl-C: where training stood, the command that resumes it and the checkpoint it will use."""
    from lmtune.run.layout import RunDir

    progress = _current_progress()   # cleared by _record_end, which records its step
    run = RunDir(cfg.output.dir)
    if not (run / "config.yaml").is_file():  # no run directory yet (or not this run's): start over
        return "stopped before training began; nothing to resume: run the same command again"
    ckpt = run.last_checkpoint()
    uses = (f"it continues from {ckpt} (step {ckpt.name.rsplit('-', 1)[-1]})" if ckpt else
            "no checkpoint was complete yet, so it starts again from step 0 (checkpoints: train.save_steps, "
            "else once per epoch)")
    where = f"at step {progress.step} of {progress.max_steps}" if progress is not None else "before the first step"
    if progress is None and distributed_run(cfg):
        where = "(the workers' last step is in metrics.jsonl)"
    return f"\nstopped {where}; resume with:\n  {resume_command(args)}\n{uses}"


def distributed_run(cfg) -> bool:
    from lmtune.train import distributed

    return distributed.needs_launch(cfg)


def _print_config(cfg, run_dir) -> None:
    """The keys this run set (differences from the defaults, auto values resolved): a YAML to save."""
    import yaml

    from lmtune.config import Config

    def diff(new: dict, old: dict) -> dict:
        out = {}
        for k, v in new.items():
            if isinstance(v, dict):
                sub = diff(v, old.get(k, {}))
                if sub:
                    out[k] = sub
            elif v != old.get(k):
                out[k] = v
        return out

    text = yaml.safe_dump(diff(cfg.to_dict(), Config().to_dict()), sort_keys=False)
    print(f"\nthe config this run used (the full one is {run_dir}/config.yaml); save it as a file "
          f"and run `lmtune train FILE`:\n\n{text}")


def _launch(args: argparse.Namespace, cfg, overrides: list[str]) -> int:
    """Check what can be checked once (config, run dir, model, engine), then start the workers."""
    from lmtune.train import distributed
    from lmtune.run import process_record
    from lmtune.run.layout import RunDir
    from lmtune.train.recipe import preflight

    distributed.check_launch(cfg)
    preflight(cfg, RunDir(cfg.output.dir), args.resume)
    if cfg.train.objective == "sft":   # preference and prompt data are read by their own loaders
        from lmtune.data.arrow_pipeline import check_files

        check_files(cfg.data)   # a bad line fails here, not after every rank has loaded torch
    child = ([args.config] if args.config else []) + overrides + (["--resume"] if args.resume else [])
    if getattr(args, "debug", False):
        child.append("--debug")
    if getattr(args, "verbose", False):
        child.append("--verbose")
    with process_record.launching():   # rank 0 records this process as the run's
        return distributed.launch(cfg, child)
