"""`lmtune report RUN`: write RUN/report.html (self-contained; open it in any browser)."""

from __future__ import annotations

import argparse


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `lmtune train`")


def run(args: argparse.Namespace) -> int:
    from lmtune.report import write_report

    print(f"wrote {write_report(args.run)}")
    return 0
