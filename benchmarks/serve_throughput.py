"""`lmtune serve` throughput: requests/s and generated tokens/s at several client concurrencies,
batched (waiting requests join one generate call) vs one request at a time (--max-batch 1), in
one process against one loaded model, through real HTTP with the official openai client.

    PYTHONPATH=src python benchmarks/serve_throughput.py [--model tiny] [--requests 32] [--max-tokens 32]

Prints one JSON line per (mode, concurrency) and appends them to benchmarks/results/serve_throughput.jsonl.
Greedy answers are checked to be the same in both modes (batching must not change them).
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROMPTS = ["What is a list in Python?", "Write SQL to count customers.", "Explain the for statement.",
           "How do I open a file?", "Customers in Oslo?", "What does dict.get return?",
           "Give a JSON object for a person.", "What is a tuple?"]


def run_level(client, model: str, concurrency: int, requests: int, max_tokens: int) -> tuple[dict, list[str]]:
    prompts = [f"{PROMPTS[i % len(PROMPTS)]} ({i})" for i in range(requests)]
    answers: list[str] = [""] * requests
    tokens = [0] * requests

    def ask(i: int) -> None:
        r = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompts[i]}],
                                           max_tokens=max_tokens, temperature=0)
        answers[i], tokens[i] = r.choices[0].message.content, r.usage.completion_tokens

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(ask, range(requests)))
    wall = time.perf_counter() - start
    return {"concurrency": concurrency, "requests": requests, "wall_s": round(wall, 3),
            "requests_per_s": round(requests / wall, 2), "tokens_per_s": round(sum(tokens) / wall, 1),
            "completion_tokens": sum(tokens)}, answers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--concurrency", default="1,4,16")
    ap.add_argument("--out", default="benchmarks/results/serve_throughput.jsonl")
    args = ap.parse_args()

    import lmtune  # noqa: F401  first: sets OpenMP's passive waiting before torch loads (lmtune/__init__.py)
    import openai
    import torch

    from lmtune.serve.app import create_app
    from lmtune.serve.engine import Engine
    from lmtune.serve.models import load_served
    from lmtune.serve.server import ThreadedServer

    served = load_served([args.model])
    name = next(iter(served))
    engine = Engine(served, max_batch=16)
    rows, reference = [], None
    with ThreadedServer(create_app(engine)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=600)
        run_level(client, name, 1, 2, args.max_tokens)  # warm-up
        for mode, max_batch in (("one-at-a-time", 1), ("batched", 16)):
            engine.max_batch = max_batch
            for c in (int(x) for x in args.concurrency.split(",")):
                calls = engine.calls
                row, answers = run_level(client, name, c, args.requests, args.max_tokens)
                if reference is None:
                    reference = answers
                row = {"bench": "serve_throughput", "model": args.model, "mode": mode, **row,
                       "generate_calls": engine.calls - calls, "same_answers": answers == reference,
                       "max_tokens": args.max_tokens, "torch_threads": torch.get_num_threads(),
                       "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
                print(json.dumps(row), flush=True)
                rows.append(row)
    engine.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
