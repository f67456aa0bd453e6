"""`lmtune eval RUN [--test FILE ...] [--base] [--few-shot K]`: loss, task metrics, forgetting.
`lmtune eval MODEL --task sql [--few-shot K]`: a plain model on its own (the "before" score)."""

from __future__ import annotations

import argparse

# lmtune's own modules are imported inside the functions below: `lmtune --help` imports every
# command module to build its parser and must stay light (no torch, transformers, yaml).


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory written by `lmtune train`; or a model ('tiny', a "
                                    "model directory, a Hub id) scored on its own with --task or --test")
    # SUPPRESS: the help text names the config key that supplies the default (argparse would say None)
    none = argparse.SUPPRESS
    parser.add_argument("--test", nargs="+", metavar="FILE", default=none,
                        help="test files (any training format); default: data.test, else the bundled "
                             "task's test split. Loss is then measured on these instead of validation")
    parser.add_argument("--base", action="store_true",
                        help="also evaluate the base model (adapter off; for full fine-tuning the "
                             "original model.name_or_path) on the same prompts")
    parser.add_argument("--num-samples", type=int, metavar="N", default=none,
                        help="score only the first N test examples (default: eval.num_samples, else all)")
    parser.add_argument("--max-new-tokens", type=int, metavar="N", default=none,
                        help="tokens generated per answer (default: eval.max_new_tokens)")
    parser.add_argument("--batch-size", type=int, metavar="N", default=none,
                        help="prompts per generation/loss batch (default: train.eval_batch_size)")
    parser.add_argument("--few-shot", type=int, metavar="K", default=none,
                        help="put K solved training examples before each test prompt (default: "
                             "eval.few_shot, 0): is prompting alone enough?")
    parser.add_argument("--task", metavar="NAME", default=none,
                        help="for a plain model: the bundled task to score it on (sql, json)")
    parser.add_argument("--out", metavar="DIR", default=none,
                        help="for a plain model: write eval.json there (a run writes into itself)")
    parser.add_argument("--no-forgetting", action="store_true", help="skip the general-text probe")
    parser.add_argument("--json", action="store_true", help="print eval.json instead of the summary")
    from lmtune.rag.arguments import add_arguments   # argparse only (see the note above)

    add_arguments(parser)   # task metrics with and without the passages, side by side


def tuning(args: argparse.Namespace):
    """CPU tuning for this process (applied by lmtune/cli.py before torch loads). --test files are
    checked first: a FIFO or a device fails in a second, not after torch's import."""
    from pathlib import Path

    from lmtune import checks
    from lmtune.train.cpu_tuning import target_for_path

    for f in getattr(args, "test", None) or []:
        if not Path(f).is_dir():
            checks.input_file(f, "--test")
    return target_for_path(args.run)


def run(args: argparse.Namespace) -> int:
    import json

    from lmtune.errors import UserError

    opts = {k: getattr(args, k, None)
            for k in ("test", "num_samples", "max_new_tokens", "batch_size", "few_shot", "task", "out")}
    for flag in ("num_samples", "max_new_tokens", "batch_size", "few_shot"):
        value, least = opts[flag], 0 if flag == "few_shot" else 1
        if value is not None and value < least:
            raise UserError(f"--{flag.replace('_', '-')}: got {value}, must be >= {least}")
    check_paths(args.run, opts)
    from lmtune.rag.arguments import flags
    from lmtune.rag.inference import rag_settings, run_config_of

    rag = rag_settings(run_config_of(args.run), *flags(args), evaluation=True)
    from lmtune.evaluate import EVAL_FILE, evaluate_run
    from lmtune.evaluate.summary import summarize

    result = evaluate_run(args.run, **opts, base=args.base, forgetting=False if args.no_forgetting else None,
                          progress=not args.json, rag=rag)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(summarize(result))
        if result.get("run"):
            print(f"wrote {result['run'].rstrip('/')}/{EVAL_FILE}")
    return 0


def check_paths(target: str, opts: dict) -> None:
    """Before any model loads: the run (or model) path, the --test files, where eval.json goes."""
    from pathlib import Path

    from lmtune import checks
    from lmtune.commands.generate import _check_model
    from lmtune.errors import UserError
    from lmtune.run.layout import check_new_output_dir

    _check_model(target)
    p = Path(target).expanduser()
    is_run = (p / "config.yaml").is_file()
    for f in opts["test"] or []:
        if Path(f).is_dir():
            checks.input_dir(f, "--test")
        else:
            checks.input_file(f, "--test", text=not f.endswith(".parquet"))
    if opts["out"] is not None:
        if is_run:
            raise UserError(f"--out: {target} is a run directory, and a run's eval.json goes into the run",
                            ["drop --out (it is for a plain model)"])
        check_new_output_dir(Path(opts["out"]), "--out", True, [Path.cwd(), p, *map(Path, opts["test"] or [])],
                             "choose a new or empty directory")
    if is_run:
        checks.writable_dir(p, "eval:")
