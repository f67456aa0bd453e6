"""`lmtune advise`: should you fine-tune, and how? Asks the decision questions of lmtune/advise.py (or reads them
from flags / an answers file), reads your data and hardware, and writes a config for `lmtune train`."""

from __future__ import annotations

import argparse
import sys

from lmtune.commands.estimate import _bool

# lmtune's own modules are imported inside the functions below: `lmtune --help` imports every
# command module to build its parser and must stay light (no torch, transformers, yaml).

YES = ("y", "yes", "true", "1")
NO = ("n", "no", "false", "0")


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="tiny", help="preset, 'tiny', a model directory or a Hub id")
    p.add_argument("--data", nargs="*", default=[], help="your training file(s) or directory")
    p.add_argument("--gpu", default=None, help="catalog GPU or 'cpu' (default: detect this machine)")
    p.add_argument("--gpu-mem", type=float, default=None, help="GiB of a GPU that is not in the catalog")
    p.add_argument("--num-gpus", type=int, default=None, help="GPUs (default: detected)")
    p.add_argument("--seq-len", type=int, default=None, help="max_length (default: from your data's lengths)")
    p.add_argument("--out", default="advised.yaml", help="where to write the training config")
    p.add_argument("--docs", default=None, help="your documents (JSONL of {id, text}, or a folder of .txt/.md): "
                                                "a hybrid verdict's config retrieves from them (rag.docs)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--output-dir", default="runs/advised", help="run directory named in the config")
    p.add_argument("--answers", default=None, help="YAML file with the answers (keys: see --list-questions)")
    p.add_argument("--yes", action="store_true", help="non-interactive: unanswered questions take their defaults")
    p.add_argument("--force", action="store_true", help="write a config even when the verdict is not to fine-tune, "
                   "and replace an existing --out file")
    p.add_argument("--list-questions", action="store_true", help="print the questions and their answer keys")
    q = p.add_argument_group("answers (flags override the answers file)")
    q.add_argument("--few-shot-works", type=_bool, default=None, metavar="BOOL")
    q.add_argument("--needs-knowledge", type=_bool, default=None, metavar="BOOL")
    q.add_argument("--factual-qa", type=_bool, default=None, metavar="BOOL")
    q.add_argument("--changing-domain", type=_bool, default=None, metavar="BOOL")
    q.add_argument("--examples", type=int, default=None, help="example count when no --data is given")
    q.add_argument("--style-or-behaviour", type=_bool, default=None, metavar="BOOL")
    q.add_argument("--style-and-facts", type=_bool, default=None, metavar="BOOL",
                   help="the answers need a trained style AND facts from documents that change (-> hybrid)")
    q.add_argument("--prompting-exhausted", type=_bool, default=None, metavar="BOOL")
    q.add_argument("--has-metric", type=_bool, default=None, metavar="BOOL")
    q.add_argument("--many-tasks", type=_bool, default=None, metavar="BOOL")
    q.add_argument("--tight-budget", type=_bool, default=None, metavar="BOOL")
    q.add_argument("--priority", choices=("quality", "balance", "memory"), default=None)


def collect_answers(args: argparse.Namespace, ask=input, interactive: bool | None = None):
    """Answers file, then flags, then (interactively) the questions still open; else defaults."""
    from lmtune.advise import QUESTIONS, Answers, answers_from_dict
    from lmtune.config import read_yaml

    raw = read_yaml(args.answers) if args.answers else {}
    for key, _, _ in QUESTIONS:
        value = getattr(args, key, None)
        if value is not None:
            raw[key] = value
    if interactive is None:
        interactive = not args.yes and sys.stdin.isatty()
    defaults = Answers()
    for key, question, kind in QUESTIONS:
        if key in raw or not interactive or (key == "examples" and args.data):
            continue
        raw[key] = _ask(ask, question, kind, getattr(defaults, key))
    return answers_from_dict(raw, args.answers or "answers")


def _ask(ask, question: str, kind: str, default):
    hint = {"bool": "[Y/n]" if default else "[y/N]", "int": "[number]",
            "choice": f"[{default}]"}[kind]
    while True:
        text = ask(f"{question} {hint} ").strip().lower()
        if not text:
            if default is not None or kind != "int":
                return default
        elif kind == "bool" and text in YES + NO:
            return text in YES
        elif kind == "int" and text.replace(",", "").isdigit():
            return int(text.replace(",", ""))
        elif kind == "choice" and text in ("quality", "balance", "memory"):
            return text
        print("  please answer " + {"bool": "y or n", "int": "with a number",
                                    "choice": "quality, balance or memory"}[kind])


def hardware(args: argparse.Namespace):
    from lmtune.estimate.core import EstimateRequest, device_for
    from lmtune.estimate.hardware import detect_devices

    if args.gpu or args.gpu_mem:
        return device_for(EstimateRequest(gpu=args.gpu, gpu_mem=args.gpu_mem)), args.num_gpus or 1
    dev, count = detect_devices()
    return dev, args.num_gpus or count


def render(advice) -> str:
    title = {"icl": "use in-context learning (few-shot prompting)", "rag": "use RAG (retrieval)",
             "hybrid": f"hybrid: fine-tune ({advice.hyperparameters.get('method', '?')}) for the style + "
                       f"retrieval (RAG) for the facts",
             "not-yet": "not yet: do not fine-tune now", "full": "fine-tune: full fine-tuning",
             "lora": "fine-tune: LoRA", "qlora": "fine-tune: QLoRA"}[advice.verdict]
    lines = [f"verdict: {title}"] + [f"  - {r}" for r in advice.reasons]
    if advice.warnings:
        lines += ["warnings:"] + [f"  ! {w}" for w in advice.warnings]
    if advice.hyperparameters:
        lines.append("starting hyperparameters:")
        lines += [f"  {k:24} {v}" for k, v in advice.hyperparameters.items()]
    if advice.auto:
        lines.append("auto values (the config says auto; train resolves them the same way on its exact token counts):")
        lines += [f"  {line}" for line in advice.auto]
    if advice.estimate.get("hours") is not None:
        lines.append(f"estimated time {advice.estimate['hours']:.2f} h, cost ${advice.estimate['cost']:.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace, out=print) -> int:
    """`out`: where the report goes (the web UI collects it; the terminal's is print)."""
    from lmtune.advise import QUESTIONS, Context, advise, summarize_data, propose, choose_method, pick_seq_len

    if args.list_questions:
        for key, question, kind in QUESTIONS:
            out(f"{key:22} {kind:6} {question}")
        return 0
    check_args(args)
    answers = collect_answers(args)
    device, gpus = hardware(args)
    data = summarize_data(args.data, args.model) if args.data else None
    ctx = Context(args.model, data, device, gpus, args.seq_len, args.output_dir, args.docs)
    advice = advise(answers, ctx)
    out(render(advice))
    config = advice.config
    if config is None and args.force:
        n = data.examples if data else (answers.examples or 0)
        method, fit, _ = choose_method(answers, ctx, pick_seq_len(ctx))
        if method:
            _, config, advice.auto = propose(method, fit, answers, ctx, pick_seq_len(ctx), n)
    if config is not None:
        _write(args.out, config, advice)
        out(f"wrote {args.out}; next: lmtune train {args.out}")
    return 0


def check_args(args: argparse.Namespace) -> None:
    """Numbers and paths before any work: the answers file, the data, where the config goes."""
    from pathlib import Path

    from lmtune import checks

    checks.number("--gpu-mem", args.gpu_mem, min=0, min_exclusive=True)
    checks.number("--num-gpus", args.num_gpus, min=1)
    checks.number("--seq-len", args.seq_len, min=8)
    checks.number("--examples", args.examples, min=0)
    if args.answers:
        checks.input_file(args.answers, "--answers", text=True)
    if args.docs:
        from lmtune.rag.docs import load_documents

        load_documents(args.docs)   # every bad record, file:line, before any work
    for d in args.data:
        if not Path(d).is_dir():
            checks.input_file(d, "--data")
    checks.output_file(args.out, "--out", overwrite=args.overwrite or args.force)


def _write(path: str, config: dict, advice) -> None:
    """Atomically (temp + rename). Data paths are absolute, so the file works from any folder;
    the auto keys carry, as comments, what they resolve to now."""
    from pathlib import Path

    import yaml

    from lmtune.run.layout import write_text

    header = f"# lmtune train {path}\n# written by `lmtune advise` (verdict: {advice.verdict})\n"
    body = yaml.safe_dump(config, sort_keys=False)
    notes = {line.split(":", 1)[0].split(".")[-1]: line.split(" -> ", 1)[-1] for line in advice.auto}
    out = []
    for line in body.splitlines():
        key = line.strip().split(":", 1)[0]
        out.append(f"{line}  # now: {notes[key]}" if line.strip().endswith(": auto") and key in notes else line)
    write_text(Path(path), header + "\n".join(out) + "\n")
