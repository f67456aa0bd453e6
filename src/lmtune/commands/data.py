"""`lmtune data check FILE...`: what a dataset holds and everything wrong with it, before training.

Prints the detected format, record/example counts, duplicates, a rendered sample with the trained
part marked, and (with --model) token lengths, truncation and the share of trained tokens. Every
bad record is listed as `file:line: what is wrong (field)` and the exit code is 2.
Without --model nothing heavy is imported (no torch, no transformers). Large files are read as a
stream and checked in parallel (lmtune/data/records.py, token_shards.py); nothing is cached.
"""

from __future__ import annotations

import argparse
from typing import Any

FORMAT_CHOICES = ("auto", "alpaca", "chat", "prompt_completion", "text")
TEMPLATE_CHOICES = ("auto", "alpaca", "chatml", "model")
SAMPLE_CHARS = 1500


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
    import tempfile
    from pathlib import Path

    from lmtune import checks
    from lmtune.errors import UserError

    checks.number("--max-length", args.max_length, min=8)
    checks.number("--samples", args.samples, min=0)
    if args.template == "model" and not args.model:
        raise UserError("--template model needs the model's tokenizer", ["add --model DIR (or --model tiny)"])
    with tempfile.TemporaryDirectory(prefix="lmtune-check-") as tmp:
        return _check(args, Path(tmp))


def _check(args: argparse.Namespace, tmp) -> int:
    """Scan (records.py: streamed, in parallel for large files), then report; the records live in
    an Arrow file under `tmp` while the report is made (arrow_pipeline.py's position arithmetic)."""
    from lmtune.data.arrow_pipeline import conflicting_prompts, dedupe_positions, first_duplicates
    from lmtune.data.preference import sniff_kind
    from lmtune.data.records import scan
    from lmtune.errors import DataError

    kind = sniff_kind(args.files) if args.format == "auto" else None
    if kind is not None:   # preference records (train.objective dpo, orpo, kto)
        from lmtune.commands.data_preference import check_preference

        return check_preference(args, kind)
    split = scan(args.files, args.format, tmp / "records.arrow")
    problems = list(split.problems)
    print(", ".join(args.files))
    detected = "detected" if args.format == "auto" else "given"
    _row("format", f"{split.format or 'unknown'} ({detected})")
    _row("records", f"{split.records} read, {len(split)} valid")
    kept = dedupe_positions(split, True, {}, "check")
    first = first_duplicates(split, 1)
    example = f" (e.g. {first[0][0]} repeats {first[0][1]})" if first else ""
    _row("duplicates", f"{len(split) - len(kept)}, dropped in training: equal up to whitespace{example}")
    _row("examples", f"{len(kept)} after dropping duplicates")
    conflicts = conflicting_prompts(split, kept)
    if conflicts:
        _row("conflicts", f"{conflicts} prompts appear with different answers")
    if len(kept):
        problems += _template_report(args, split, kept)
    if problems:
        n = len(problems)
        raise DataError(f"{n} problem{'s' if n != 1 else ''} in {split.records} records; fix each line "
                        f"below", problems)
    if not len(kept):
        raise DataError("no examples", [f"{', '.join(args.files)}: no records found"])
    print(f"ok: {len(kept)} examples, no problems")
    return 0


def _row(label: str, value: str) -> None:
    print(f"  {label:<12}{value}")


def _template_report(args: argparse.Namespace, split: Any, kept: Any) -> list[str]:
    """Template, token statistics (with a tokenizer) and samples; returns template problems."""
    from lmtune.data.templates import get_template, resolve_template_name

    data_format = split.format
    tokenizer, missing = (_tokenizer(args.model) if args.model else (None, ""))
    template = get_template(args.template, data_format, tokenizer, args.system_prompt)
    note = ""
    if args.template == "auto" and tokenizer is None and resolve_template_name("auto", data_format) != "raw":
        note = " (auto, no tokenizer; with a model that has a chat template auto picks 'model')"
    if template.name == "model":
        markers = "with" if template.has_generation_markers else "without"
        note = f" (the tokenizer's chat template, {markers} {{% generation %}} markers)"
    _row("template", template.name + note)
    if tokenizer is None:
        _row("tokens", missing or "not counted: pass --model DIR, a cached Hub id, or --model tiny")
        return _segment_samples(template, split, kept, args.samples)
    return _token_report(args, template, tokenizer, split, kept)


def _tokenizer(model: str) -> tuple[Any, str]:
    """(tokenizer, "") or (None, why not) when the embedded base is not built in this checkout."""
    from lmtune.models import EMBEDDED, embedded_model_dir, open_tokenizer

    if model in EMBEDDED and not (embedded_model_dir(model) / "tokenizer.json").is_file():
        return None, f"not counted: the embedded '{model}' base is not built yet (scripts/build_base.py)"
    return open_tokenizer(model), ""


def _token_report(args: argparse.Namespace, template: Any, tokenizer: Any, split: Any, kept: Any) -> list[str]:
    from lmtune.data.token_shards import tokenize_to_arrow

    tok = tokenize_to_arrow(split, kept, template, tokenizer, args.max_length, args.train_on_prompt, None,
                            "examples", keep_samples=args.samples)
    s = tok.stats()
    print(f"tokens (tokenizer {args.model}, max_length {args.max_length})")
    if s["examples"] or s["dropped"]:
        _row("length", f"min {s['length_min']}  median {s['length_median']}  p95 {s['length_p95']}  "
                       f"max {s['length_max']}")
        dropped = f", {s['dropped']} of them lose the whole answer and are dropped" if s["dropped"] else ""
        _row("truncated", f"{s['truncated']} of {len(tok.full_lengths)} longer than {args.max_length}{dropped}")
        _row("trained", f"{100 * s['trained_share']:.1f}% of {s['tokens']} tokens "
                        f"({'prompt included' if args.train_on_prompt else 'answers + eos'})")
    if s["dropped"]:
        print(f"warning: {s['dropped']} examples would lose their whole answer at max_length "
              f"{args.max_length} and be dropped; raise --max-length (data.max_length)")
    for ids, mask, source in tok.samples[: args.samples]:
        _print_sample(source, template.name, _token_pieces(tokenizer, ids, mask))
    return tok.problems


def _token_pieces(tokenizer: Any, ids: list[int], mask: list[int]) -> list[tuple[str, bool]]:
    pieces, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or mask[i] != mask[start]:
            pieces.append((tokenizer.decode(ids[start:i], skip_special_tokens=False), bool(mask[start])))
            start = i
    return pieces


def _segment_samples(template: Any, split: Any, kept: Any, count: int) -> list[str]:
    from lmtune.data.templates import TemplateError

    problems, shown = [], 0
    for start in range(0, len(kept), 10_000):
        for ex in split.examples(kept[start:start + 10_000]):
            try:
                segments = template.segments(ex)
            except TemplateError as exc:
                problems.append(f"{ex.source}: {exc}")
                continue
            if shown < count:
                pieces = [(s.text, s.trained) for s in segments] + [("<eos>", True)]
                _print_sample(ex.source, template.name, pieces)
                shown += 1
    return problems


def _print_sample(source: str, template: str, pieces: list[tuple[str, bool]]) -> None:
    merged: list[tuple[str, bool]] = []
    for t, trained in pieces:
        if merged and merged[-1][1] == trained:
            merged[-1] = (merged[-1][0] + t, trained)
        else:
            merged.append((t, trained))
    text = "".join(f"[[{t}]]" if trained else t for t, trained in merged)
    if len(text) > SAMPLE_CHARS:
        text = text[:SAMPLE_CHARS] + f" ... ({len(text) - SAMPLE_CHARS} more characters)"
    print(f"sample {source} (template {template}; trained tokens inside [[ ]])")
    for line in text.split("\n"):
        print(f"  | {line}")
