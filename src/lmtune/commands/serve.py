"""`lmtune serve RUN_OR_MODEL [RUN ...]`: an OpenAI-compatible HTTP API (chat, completions, SSE)."""

from __future__ import annotations

import argparse
import os
import sys

from lmtune.serve import DEFAULT_MAX_REQUEST_BYTES

# lmtune's other modules are imported inside the functions below: `lmtune --help` imports every
# command module to build its parser and must stay light (no torch, transformers, yaml).


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("models", nargs="+", metavar="RUN_OR_MODEL",
                        help="run directory, adapter, merged/base model directory or 'tiny'; several runs "
                             "or adapters over one base are served together (a request's model field "
                             "picks one by its directory name)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port, 1-65535")
    parser.add_argument("--api-key", default=None,
                        help="require 'Authorization: Bearer KEY' (or set $LMTUNE_API_KEY); none: no key")
    parser.add_argument("--max-batch", type=int, default=16,
                        help="most requests generating at once: rows of the running batch, which requests join "
                             "and leave between tokens (1: one at a time)")
    parser.add_argument("--max-tokens", type=int, default=512,
                        help="answer length when a request gives no max_tokens (always capped by the context)")
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES,
                        help="largest request body taken; a larger one is refused with 413 before it is read")
    from lmtune.rag.arguments import add_arguments   # argparse only (see the note above)

    add_arguments(parser)   # --docs: for every served model; default: each run's own rag.docs


def tuning(args: argparse.Namespace):
    """CPU tuning for this process (applied by lmtune/cli.py before torch loads), from the first
    model's config and base, as for generate."""
    from lmtune.train.cpu_tuning import target_for_path

    return target_for_path(args.models[0])


def run(args: argparse.Namespace) -> int:
    from lmtune.errors import UserError
    from lmtune.serve.server import bind

    args.api_key = args.api_key or os.environ.get("LMTUNE_API_KEY") or None
    if args.max_batch < 1 or args.max_tokens < 1:
        raise UserError("--max-batch and --max-tokens must be at least 1")
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: a TCP port is between 1 and 65535",
                        ["pick a free port such as --port 8000"])
    if args.max_request_bytes < 1024:
        raise UserError(f"--max-request-bytes {args.max_request_bytes}: at least 1024 bytes",
                        [f"the default is {DEFAULT_MAX_REQUEST_BYTES:,} (4 MiB)"])
    from lmtune.rag.arguments import flags
    from lmtune.rag.inference import rag_settings, run_config_of

    rags = [rag_settings(run_config_of(p), *flags(args)) for p in args.models]
    sock = bind(args.host, args.port)  # before loading: a busy port fails in a second, not after a load
    from lmtune.serve.app import create_app
    from lmtune.serve.engine import Engine
    from lmtune.serve.models import add_retrieval, load_served
    from lmtune.serve.server import make_server

    served = load_served(args.models)
    add_retrieval(served, rags)
    engine = Engine(served, max_batch=args.max_batch)
    app = create_app(engine, api_key=args.api_key, default_max_tokens=args.max_tokens,
                     max_request_bytes=args.max_request_bytes)
    host, port = sock.getsockname()[:2]
    print(f"serving {', '.join(served)} at http://{host}:{port}/v1"
          + (" (API key required)" if args.api_key else ""), file=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        print(f"warning: listening on {args.host} without --api-key: anyone who reaches this port can use "
              "the model", file=sys.stderr)
    try:
        make_server(app).run(sockets=[sock])
    finally:
        engine.close()
        sock.close()
    return 0
