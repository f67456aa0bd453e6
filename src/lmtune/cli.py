"""`lmtune <command>`: a thin dispatcher. Each command lives in lmtune/commands/<name>.py with
`register(parser)` (arguments, light imports only) and `run(args) -> int` (heavy imports inside),
so `lmtune --help` never imports torch.

Exit codes: 0 ok, 2 user error (bad input/config; one message, no traceback unless --debug),
1 internal failure.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from lmtune import __version__
from lmtune.errors import UserError

# command name -> (module under lmtune.commands, one-line help). Order is the pipeline's order.
COMMANDS: dict[str, tuple[str, str]] = {
    "advise": ("advise", "should you fine-tune, and how? writes a ready config"),
    "estimate": ("estimate", "memory, time and cost of a run, from the model's config"),
    "data": ("data", "check and inspect a dataset"),
    "config": ("config", "show the resolved config with every default"),
    "train": ("train", "fine-tune (full, lora, qlora) from a YAML config"),
    "eval": ("eval", "evaluate a run: loss, task metrics, base vs tuned, forgetting"),
    "generate": ("generate", "generate with a base, a run or a merged model"),
    "merge": ("merge", "merge an adapter into a standalone model"),
    "report": ("report", "write report.html for a run"),
    "compare": ("compare", "compare several runs side by side"),
    "serve": ("serve", "serve runs or models over an OpenAI-compatible HTTP API"),
    "export": ("export", "export a run as GGUF (llama.cpp) with an Ollama Modelfile"),
    "sweep": ("sweep", "hyperparameter search over a config (Optuna): trials are ordinary runs"),
    "ui": ("ui", "a local web app: runs, live curves, comparison"),
    "pairs": ("pairs", "preference pairs sampled from a run, scored by the task's own metric"),
}




def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmtune",
        description="Fine-tune language models: advise -> estimate -> data -> train -> eval -> merge.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lmtune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for user errors (and library warnings)")
    parser.add_argument("--verbose", action="store_true", help="show the libraries' warnings and log lines")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"lmtune.commands.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks for user errors (and library warnings)")
        p.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="show the libraries' warnings and log lines")
        mod.register(p)
        p.set_defaults(_run=mod.run, _tuning=getattr(mod, "tuning", None))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # parse_known_args: `lmtune train c.yaml --resume lora.r=8` puts overrides after a flag,
    # which argparse cannot intermix with subcommands; collect them here.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    # Imported after parsing: `lmtune --help` and argument errors return above without loading them.
    from lmtune.console import configure

    configure(verbose=getattr(args, "verbose", False) or getattr(args, "debug", False))
    try:
        if args._tuning is not None:  # commands that run a model: CPU tuning before torch loads
            from lmtune.train.cpu_tuning import apply

            apply(args._tuning(args))
        return int(args._run(args) or 0)
    except UserError as exc:
        if getattr(args, "debug", False):
            raise
        print(exc.render(), file=sys.stderr)
        return 2
    except BrokenPipeError:  # `lmtune data check big.jsonl | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
