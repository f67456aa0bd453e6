"""`lmtune data check FILE...` and `lmtune data cache`: the arguments; the check itself is
lmtune/data/check.py (what a dataset holds and everything wrong with it; exit 2 on any bad record).
"""

from __future__ import annotations

import argparse

FORMAT_CHOICES = ("auto", "alpaca", "chat", "prompt_completion", "text")
TEMPLATE_CHOICES = ("auto", "alpaca", "chatml", "model")
RECORD_LIMIT = "8 MiB"   # readers.MAX_RECORD_BYTES, spelled out: `--help` imports no data module


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    check = sub.add_parser("check", help="validate files and print their statistics",
                           description="Validate data files (jsonl, json, csv, tsv, parquet or a directory) "
                                       "and print their statistics; exit 2 when any record is bad. Only "
                                       "regular files are read (a FIFO or a device is refused), and one record "
                                       f"(a JSON Lines line, a CSV row, ...) may hold at most {RECORD_LIMIT}.",
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
                                        "else ~/.cache/lmtune/data. data.cache=false turns it off for a run. "
                                        "Each entry records its files' sizes and hashes and is verified on use: "
                                        "a damaged one is rebuilt. Listed too: unfinished builds (.build-*, left "
                                        "by a killed run) and entries whose meta.json is missing or unreadable.")
    cached.add_argument("--clear", action="store_true",
                        help="remove every entry, unfinished build and broken entry lmtune wrote there "
                             "(a build a running lmtune holds is kept)")


def run(args: argparse.Namespace) -> int:
    command = getattr(args, "data_command", None)
    if command == "cache":
        return cache_command(args)
    if command != "check":
        print("usage: lmtune data check FILE... | lmtune data cache [--clear] (see --help)")
        return 2
    return check(args)


def cache_command(args: argparse.Namespace) -> int:
    """List lmtune's cache of prepared data; --clear removes what lmtune wrote there (entries with
    its meta.json, unfinished `.build-*` directories, key-named entries with a broken meta.json),
    nothing else in the directory. A read-only cache on --clear is an error (exit 2)."""
    from lmtune.data import cache
    from lmtune.errors import UserError

    root = cache.cache_root()
    if root.exists() and not root.is_dir():
        raise UserError(f"data cache {root}: is not a directory", ["remove that file, or set LMTUNE_CACHE_DIR "
                                                                   "to a directory"])
    found = cache.survey()
    sizes = {p: cache.size_bytes(p) for kind in found.values() for p in kind}
    entries = found["entries"]
    print(f"data cache: {root} ({len(entries)} entries, {sum(sizes[e] for e in entries) / 1e6:.1f} MB)")
    for entry in entries:
        problem = cache.verify(entry, entry.name, hashes=False)   # sizes only: a listing reads no data
        note = f"  ({problem}; rebuilt on use)" if problem else ""
        print(f"  {entry.name}  {sizes[entry] / 1e6:.1f} MB{note}")
    held = [b for b in found["builds"] if cache.in_use(b)]
    labels = {"builds": "unfinished builds (left by a killed or failed run)",
              "broken": "broken entries (meta.json missing, unreadable or not lmtune's)"}
    for kind, label in labels.items():
        if found[kind]:
            print(f"{label}:")
        for path in found[kind]:
            note = "  (in use by a running lmtune)" if path in held else ""
            print(f"  {path.name}  {sizes[path] / 1e6:.1f} MB{note}")
    if args.clear:
        _clear(root, found, held)
    return 0


def _clear(root, found: dict, held: list) -> None:
    from lmtune import checks
    from lmtune.data import cache
    from lmtune.errors import UserError

    doomed = [p for kind in ("entries", "builds", "broken") for p in found[kind] if p not in held]
    if doomed and not checks._can_write(root):
        raise UserError(f"data cache {root}: read-only, nothing removed",
                        [f"make it writable (chmod u+w {root}), or point LMTUNE_CACHE_DIR elsewhere"])
    failed = [f"{p}: {reason}" for p in doomed if (reason := cache.remove(p))]
    counts = [f"{len(found[k]) - len([p for p in found[k] if p in held])} {name}"
              for k, name in (("entries", "entries"), ("builds", "unfinished builds"), ("broken", "broken entries"))]
    kept = f"; kept {len(held)} build(s) in use" if held else ""
    if failed:
        raise UserError(f"data cache {root}: could not remove {len(failed)} of {len(doomed)}", failed)
    print(f"removed {', '.join(counts)}{kept}")


def check(args: argparse.Namespace, emit=print) -> int:
    """`emit`: where the report goes, line by line (the web UI collects it)."""
    from lmtune import checks
    from lmtune.data.check import CheckOptions, check_data, check_preference
    from lmtune.data.preference import sniff_kind
    from lmtune.errors import UserError

    checks.number("--max-length", args.max_length, min=8)
    checks.number("--samples", args.samples, min=0)
    if args.template == "model" and not args.model:
        raise UserError("--template model needs the model's tokenizer", ["add --model DIR (or --model tiny)"])
    kind = sniff_kind(args.files) if args.format == "auto" else None
    options = CheckOptions(args.format, args.template, args.model, args.max_length, args.train_on_prompt,
                           args.system_prompt, args.samples)
    if kind is not None:   # preference records (train.objective dpo, orpo, kto)
        return check_preference(args.files, options, kind, emit)
    return check_data(args.files, options, emit)
