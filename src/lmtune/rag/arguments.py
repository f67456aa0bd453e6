"""The retrieval flags of generate, serve and eval (argparse only: `lmtune --help` imports this)."""

from __future__ import annotations


def add_arguments(parser) -> None:
    """--docs, --no-docs and --top-k, the same for generate, serve and eval."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--docs", metavar="DOCS", default=None,
                       help="retrieve passages from DOCS (JSONL of {id, text} or a folder of .txt/.md) and put "
                            "them before each question; default: the run's rag.docs, if it trained with one")
    group.add_argument("--no-docs", action="store_true", help="no retrieval, even for a run trained with rag.docs")
    parser.add_argument("--top-k", type=int, metavar="K", default=None,
                        help="passages per question (default: the run's rag.top_k, 3)")
