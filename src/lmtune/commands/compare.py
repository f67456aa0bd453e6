"""`lmtune compare RUN RUN ... [--markdown FILE] [--html FILE]`: runs side by side."""

from __future__ import annotations

import argparse

# lmtune's own modules are imported inside the functions below: `lmtune --help` imports every
# command module to build its parser and must stay light (no torch, transformers, yaml).


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="+", help="run directories (evaluated with `lmtune eval` for the task column)")
    parser.add_argument("--markdown", metavar="FILE", help="also write the table as markdown")
    parser.add_argument("--html", metavar="FILE", help="also write the table as a standalone HTML page")
    parser.add_argument("--overwrite", action="store_true", help="replace existing --markdown/--html files")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lmtune import checks
    from lmtune.report.compare import compare, to_html, to_markdown, to_text
    from lmtune.errors import UserError
    from lmtune.run.layout import write_text

    from lmtune.report.build import load_run

    for run in args.runs:
        load_run(run)  # each is a run directory (reads only its small files)
    for flag, path in (("--markdown", args.markdown), ("--html", args.html)):
        if path:
            checks.output_file(path, flag, overwrite=args.overwrite)
    if args.markdown and args.html and Path(args.markdown).absolute() == Path(args.html).absolute():
        raise UserError(f"--markdown and --html both name {args.markdown}", ["give two different files"])
    rows, notes = compare(args.runs)
    print(to_text(rows, notes), end="")
    if args.markdown:
        write_text(Path(args.markdown), to_markdown(rows, notes))
        print(f"wrote {args.markdown}")
    if args.html:
        write_text(Path(args.html), to_html(rows, notes))
        print(f"wrote {args.html}")
    return 0
