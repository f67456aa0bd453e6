"""`lmtune train CONFIG [key=value ...] [--resume]`."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config (see configs/); `lmtune config show --explain` lists every key")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=1 lora.r=8")
    parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint")
    parser.add_argument("--output", "-o", help="run directory (same as output.dir=...)")


def run(args: argparse.Namespace) -> int:
    from lmtune.config import load_config

    overrides = list(args.overrides) + ([f"output.dir={args.output}"] if args.output else [])
    cfg = load_config(args.config, overrides)
    from lmtune.train import train

    result = train(cfg, resume=args.resume)
    print(f"run directory: {result.run_dir}")
    return 0
