"""`lmtune report RUN`: write RUN/report.html (self-contained; open it in any browser)."""

from __future__ import annotations

import argparse

# lmtune's own modules are imported inside the functions below: `lmtune --help` imports every
# command module to build its parser and must stay light (no torch, transformers, yaml).


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `lmtune train`")


def run(args: argparse.Namespace) -> int:
    from lmtune import checks
    from lmtune.report.build import load_run, write_report

    run = checks.input_dir(args.run, "report:", "run directory")
    load_run(run)  # a run directory at all? (reads only its small JSON files)
    checks.writable_dir(run, "report:")
    print(f"wrote {write_report(args.run)}")
    return 0
