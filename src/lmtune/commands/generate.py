"""`lmtune generate RUN_OR_MODEL [--prompt TEXT | --file prompts.jsonl]`; no prompt: interactive chat."""

from __future__ import annotations

import argparse
import json
import sys

# lmtune's own modules are imported inside the functions below: `lmtune --help` imports every
# command module to build its parser and must stay light (no torch, transformers, yaml).


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="run directory, adapter directory, merged/base model directory, or 'tiny'")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--prompt", help="one prompt")
    src.add_argument("--file", help="JSONL of prompts: records in the training format, or {\"prompt\": ...}")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=0.7, help="with --sample")
    parser.add_argument("--top-p", type=float, default=0.9, help="with --sample")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-adapter", action="store_true", help="generate with the run's base model only")
    parser.add_argument("--out", help="write {prompt, output} JSONL here (with --file)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    from lmtune.rag.arguments import add_arguments   # argparse only (see the note above)

    add_arguments(parser)


def _read_prompts(path: str) -> list:
    from lmtune.errors import DataError

    from lmtune.data.readers import LongLine, line_blocks

    items, problems = [], []
    with open(path, "rb") as fh:
        for n, line in _lines(line_blocks(fh, path, 1 << 20)):
            if isinstance(line, LongLine):    # never held: a prompt over the per-record limit
                problems.append(line.problem())
                continue
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{n}: malformed JSON ({exc.msg})")
                continue
            if isinstance(rec, str):
                items.append(rec)
            elif isinstance(rec, dict) and isinstance(rec.get("prompt"), str) and "completion" not in rec:
                items.append(rec["prompt"])
            elif isinstance(rec, dict):
                items.append(rec)
            else:
                problems.append(f"{path}:{n}: expected a JSON object or string")
    if problems:
        raise DataError(f"{path}: {len(problems)} bad prompt lines", problems)
    return items


def _lines(pieces):
    """(line number, text) from readers.line_blocks' pieces (the file is UTF-8: input_file checked)."""
    for piece in pieces:
        if isinstance(piece, tuple):
            block, start, _ = piece
            for number, line in enumerate(block.splitlines(), start):   # numbered as line_blocks counts
                yield number, line.decode("utf-8")
        else:
            yield piece.line, piece


def tuning(args: argparse.Namespace):
    """CPU tuning for this process (applied by lmtune/cli.py before torch loads). --file is checked
    first: a FIFO or a device fails in a second, not after torch's import."""
    from lmtune import checks
    from lmtune.train.cpu_tuning import target_for_path

    if args.file:
        checks.input_file(args.file, "--file")
    return target_for_path(args.model)


def check_args(args: argparse.Namespace) -> list | None:
    """Every flag and path, before the model loads; returns the prompts read from --file."""
    from lmtune import checks
    from lmtune.errors import UserError

    checks.number("--max-new-tokens", args.max_new_tokens, min=1)
    checks.number("--seed", args.seed, min=0)
    checks.number("--temperature", args.temperature, min=0)
    checks.number("--top-p", args.top_p, min=0, min_exclusive=True, max=1)
    if args.sample and args.temperature == 0:
        raise UserError("--sample with --temperature 0: sampling needs a temperature > 0",
                        ["drop --sample for greedy decoding, or give --temperature 0.7"])
    if args.out and not args.file:
        raise UserError("--out writes the outputs of --file prompts", ["add --file prompts.jsonl, or drop --out"])
    if args.prompt is not None and not args.prompt.strip():
        raise UserError("--prompt: empty", ["give the text to complete, e.g. --prompt 'Hello'"])
    items = None
    if args.file:
        checks.input_file(args.file, "--file", text=True)
        items = _read_prompts(args.file)
        if not items:
            raise UserError(f"--file {args.file}: no prompts (the file is empty)", ["one JSON prompt per line"])
    if args.out:
        checks.output_file(args.out, "--out", overwrite=args.overwrite)
    _check_model(args.model)
    _check_rag(args)
    return items


def _check_rag(args: argparse.Namespace) -> None:
    """args.rag: the retrieval settings (None: none), the documents checked before the model loads."""
    from lmtune.rag.arguments import flags
    from lmtune.rag.inference import rag_settings, run_config_of

    args.rag = rag_settings(run_config_of(args.model), *flags(args))


def _check_model(model: str) -> None:
    """A path that is not there: say so now (a Hub id or 'tiny' is resolved when loading)."""
    from pathlib import Path

    from lmtune.errors import UserError

    p = Path(model).expanduser()
    if p.exists() and not p.is_dir():
        raise UserError(f"{model}: is a file; expected a run, adapter or model directory",
                        ["give the directory `lmtune train` wrote, an adapter or a model directory"])
    if not p.exists() and (model.startswith((".", "/", "~")) or model.count("/") > 1 or "\\" in model):
        raise UserError(f"{model}: no such run, adapter or model directory",
                        ["check the path, or give 'tiny' or a Hub id (org/name)"])


def run(args: argparse.Namespace) -> int:
    from lmtune.generate import GenerationSettings, Generator

    items = check_args(args)
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, greedy=not args.sample,
                                  temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    gen = Generator.load(args.model, use_adapter=not args.no_adapter)
    search = _searcher(args, gen)
    if args.prompt is not None:
        prompt, passages = _with_passages(args.prompt, search)
        print(gen.generate([prompt], settings)[0])
        if passages:
            print("sources: " + "; ".join(f"[{i}] {p.id} ({p.source})" for i, p in enumerate(passages, 1)),
                  file=sys.stderr)
        return 0
    if args.file:
        found = [_with_passages(item, search) for item in items]
        outputs = gen.generate([prompt for prompt, _ in found], settings, progress=True)
        lines = "".join(json.dumps({"prompt": item, "output": out,
                                    **({"sources": [p.to_dict() for p in passages]} if search else {})},
                                   ensure_ascii=False) + "\n"
                        for item, out, (_, passages) in zip(items, outputs, found))
        if args.out:
            from pathlib import Path

            from lmtune.run.layout import write_text

            write_text(Path(args.out), lines)  # whole or absent
        else:
            sys.stdout.write(lines)
        return 0
    return _chat(gen, settings, search)


def _searcher(args: argparse.Namespace, gen):
    """search(question) -> passages with the run's tokenizer, or None without retrieval."""
    from lmtune.rag.inference import open_retriever, searcher

    if args.rag is None:
        return None
    return searcher(open_retriever(args.rag, gen.tokenizer), args.rag.top_k)


def _with_passages(item, search):
    """(the prompt with its passages, the passages); the item as it is without retrieval."""
    if search is None:
        return item, []
    from lmtune.rag.prompt import augment_item

    return augment_item(item, search)


def _chat(gen, settings, search=None) -> int:
    """Multi-turn chat in the terminal; an empty line or /exit quits, /reset clears the history."""
    history: list[dict] = []
    print("chat with the model (/reset clears, /exit or an empty line quits)")
    while True:
        try:
            text = input("you> ").strip()
        except EOFError:
            break
        if not text or text == "/exit":
            break
        if text == "/reset":
            history = []
            continue
        history.append({"role": "user", "content": text})
        prompt, passages = _with_passages(list(history), search)   # passages for this turn only
        answer = gen.generate([prompt], settings)[0].strip()
        if passages:
            print("sources: " + ", ".join(p.id for p in passages))
        history.append({"role": "assistant", "content": answer})
        print(f"model> {answer}")
    return 0
