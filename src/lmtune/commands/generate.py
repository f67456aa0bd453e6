"""`lmtune generate RUN_OR_MODEL [--prompt TEXT | --file prompts.jsonl]`; no prompt: interactive chat."""

from __future__ import annotations

import argparse
import json
import sys


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


def _read_prompts(path: str) -> list:
    from lmtune.errors import DataError

    items, problems = [], []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
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


def tuning(args: argparse.Namespace):
    """CPU tuning for this process (applied by lmtune/cli.py before torch loads)."""
    from lmtune.cpu_tuning import target_for_path

    return target_for_path(args.model)


def run(args: argparse.Namespace) -> int:
    from lmtune.generate import GenerationSettings, Generator

    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, greedy=not args.sample,
                                  temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    gen = Generator.load(args.model, use_adapter=not args.no_adapter)
    if args.prompt is not None:
        print(gen.generate([args.prompt], settings)[0])
        return 0
    if args.file:
        items = _read_prompts(args.file)
        outputs = gen.generate(items, settings, progress=True)
        sink = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
        for item, out in zip(items, outputs):
            sink.write(json.dumps({"prompt": item, "output": out}, ensure_ascii=False) + "\n")
        if args.out:
            sink.close()
        return 0
    return _chat(gen, settings)


def _chat(gen, settings) -> int:
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
        answer = gen.generate([list(history)], settings)[0].strip()
        history.append({"role": "assistant", "content": answer})
        print(f"model> {answer}")
    return 0
