"""`lmtune data check FILE...` and `lmtune data cache`: the arguments; the check itself is
lmtune/data/check.py (what a dataset holds and everything wrong with it; exit 2 on any bad record).
"""

from __future__ import annotations

import argparse

FORMAT_CHOICES = ("auto", "alpaca", "chat", "prompt_completion", "text")
TEMPLATE_CHOICES = ("auto", "alpaca", "chatml", "model")


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    check = sub.add_parser("check", help="validate files and print their statistics",
                           description="Validate data files (jsonl, json, csv, tsv, parquet or a directory) "
                                       "and print their statistics; exit 2 when any record is bad.",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    check.add_argument("files", nargs="+", metavar="FILE", help="data files or directories")
    check.add_argument("--format", default="auto", choices=FORMAT_CHOICES, help="record format")
    check.add_argument("--template", default="auto", choices=TEMPLATE_CHOICES,
                       help="prompt template (auto: the model's chat template if it has one, "
                            "else alpaca for alpaca data, chatml for chat data)")
    check.add_argument("--model", default=None, metavar="M",
                       help="tokenizer for token statistics: a model directory, a cached Hub id, or "
                            "'tiny' (the embedded base); without it no token statistics")
    check.add_argument("--max-length", type=int, default=512, metavar="N",
                       help="sequence length in tokens; longer examples are counted as truncated")
    check.add_argument("--train-on-prompt", action="store_true", help="count prompt tokens as trained")
    check.add_argument("--system-prompt", default=None, help="system message added to examples without one")
    check.add_argument("--samples", type=int, default=1, metavar="K", help="rendered samples to show")
    check.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks for user errors")
    check.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="show the libraries' warnings and log lines")
    cached = sub.add_parser("cache", help="list (or --clear) lmtune's cache of prepared data",
                            description="lmtune caches the tokenized data of each run (keyed by the data files, "
                                        "tokenizer, template and data settings) so a rerun or --resume skips the "
                                        "work. Where: $LMTUNE_CACHE_DIR/data, else $XDG_CACHE_HOME/lmtune/data, "
                                        "else ~/.cache/lmtune/data. data.cache=false turns it off for a run.")
    cached.add_argument("--clear", action="store_true", help="remove every entry lmtune wrote there")


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "data_command", None)
    if command == "cache":
        return cache_command(args)
    if command != "check":
        print("usage: lmtune data check FILE... | lmtune data cache [--clear] (see --help)")
        return 2
    return check(args)


def cache_command(args: argparse.Namespace) -> int:
    """List lmtune's cache of prepared data; --clear removes the entries lmtune wrote (only those:
    directories with lmtune's meta.json), nothing else in the directory."""
    import shutil

    from lmtune.data import cache

    entries = cache.entries()
    sizes = [cache.size_bytes(e) for e in entries]
    print(f"data cache: {cache.cache_root()} ({len(entries)} entries, {sum(sizes) / 1e6:.1f} MB)")
    for entry, size in zip(entries, sizes):
        print(f"  {entry.name}  {size / 1e6:.1f} MB")
    if args.clear:
        for entry in entries:
            shutil.rmtree(entry)
        print(f"removed {len(entries)} entries")
    return 0


def check(args: argparse.Namespace) -> int:
    from lmtune import checks
    from lmtune.data.check import CheckOptions, check_data
    from lmtune.errors import UserError

    checks.number("--max-length", args.max_length, min=8)
    checks.number("--samples", args.samples, min=0)
    if args.template == "model" and not args.model:
        raise UserError("--template model needs the model's tokenizer", ["add --model DIR (or --model tiny)"])
    options = CheckOptions(args.format, args.template, args.model, args.max_length, args.train_on_prompt,
                           args.system_prompt, args.samples)
    return check_data(args.files, options, print)
