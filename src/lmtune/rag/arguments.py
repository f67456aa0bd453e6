"""The retrieval flags of generate, serve and eval (argparse only: `lmtune --help` imports this)."""

from __future__ import annotations

import argparse


def add_arguments(parser) -> None:
    """--docs, --no-docs and --top-k, the same for generate, serve and eval."""
    group = parser.add_mutually_exclusive_group()
    # SUPPRESS: the help names where the default comes from (argparse would add "default: None")
    group.add_argument("--docs", metavar="DOCS", default=argparse.SUPPRESS,
                       help="retrieve passages from DOCS (JSONL of {id, text} or a folder of .txt/.md) and put "
                            "them before each question; default: the run's rag.docs, if it trained with one")
    group.add_argument("--no-docs", action="store_true", help="no retrieval, even for a run trained with rag.docs")
    parser.add_argument("--top-k", type=int, metavar="K", default=argparse.SUPPRESS,
                        help="passages per question (default: the run's rag.top_k, 3)")


def flags(args: argparse.Namespace) -> tuple[str | None, bool, int | None]:
    """(--docs, --no-docs, --top-k) as given; None where not given."""
    return getattr(args, "docs", None), args.no_docs, getattr(args, "top_k", None)
