"""`lmtune config show FILE [key=value ...]`: the resolved config with every default spelled out."""

from __future__ import annotations

import argparse

# lmtune's own modules are imported inside the functions below: `lmtune --help` imports every
# command module to build its parser and must stay light (no torch, transformers, yaml).


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print the resolved config (YAML) with every default")
    show.add_argument("file", nargs="?", help="YAML config (omit to see the defaults)")
    show.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.epochs=2")
    show.add_argument("--explain", action="store_true", help="list every key with its default and meaning")


def run(args: argparse.Namespace) -> int:
    from lmtune.config import explain, load_config

    file, overrides = args.file, list(args.overrides)
    if file and "=" in file:  # `lmtune config show train.epochs=2`: no file, only overrides
        file, overrides = None, [file, *overrides]
    if args.explain:
        for key, default, doc in explain():
            print(f"{key:32} {default:14} {doc}")
        return 0
    cfg = load_config(file, overrides)
    print(cfg.to_yaml(), end="")
    return 0
