"""`lmtune serve` throughput and latency: continuous batching (serve/engine.py) against the static
batching it replaced (benchmarks/serve_static_engine.py: waiting requests join one generate
call, which runs until its longest row ends), in one process against one loaded model, through
real HTTP with the official openai client. Both engines run in the same script run, one after
the other, so the ratios are fair on a shared machine.

    PYTHONPATH=src python benchmarks/serve_throughput.py [--model tiny] [--requests 32] [--max-tokens 32]
        [--concurrency 4,16] [--long-tokens 1000] [--short-tokens 4]

Throughput: requests/s and generated tokens/s at each client concurrency. Latency: a short
request (--short-tokens) alone, then beside a long one (--long-tokens, streamed, started first).
Prints one JSON line per measurement and appends them to benchmarks/results/serve_throughput.jsonl.
Greedy answers are checked to be the same for both engines.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROMPTS = ["What is a list in Python?", "Write SQL to count customers.", "Explain the for statement.",
           "How do I open a file?", "Customers in Oslo?", "What does dict.get return?",
           "Give a JSON object for a person.", "What is a tuple?"]
LONG_PROMPT = "What is a list in Python?"  # the tiny base runs on for 1,000 tokens here
SHORT_PROMPT = "Hello!"


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


def short_beside_long(client, model: str, short_tokens: int, long_tokens: int) -> dict:
    """Seconds for the short request alone, then with the long one running (its first token seen)."""
    def short() -> float:
        t = time.perf_counter()
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": SHORT_PROMPT}],
                                       max_tokens=short_tokens, temperature=0)
        return time.perf_counter() - t

    alone = min(short() for _ in range(3))
    started, long_tokens_seen = threading.Event(), [0]

    def long() -> None:
        stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": LONG_PROMPT}],
                                                max_tokens=long_tokens, temperature=0, stream=True)
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                long_tokens_seen[0] += 1
                started.set()
        started.set()

    runner = threading.Thread(target=long, daemon=True)
    runner.start()
    started.wait()
    beside = short()
    runner.join()
    return {"short_alone_s": round(alone, 3), "short_beside_long_s": round(beside, 3),
            "ratio": round(beside / alone, 2), "long_chunks": long_tokens_seen[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--concurrency", default="4,16")
    ap.add_argument("--long-tokens", type=int, default=1000, help="0: skip the latency measurement")
    ap.add_argument("--short-tokens", type=int, default=4)
    ap.add_argument("--out", default="benchmarks/results/serve_throughput.jsonl")
    args = ap.parse_args()

    import lmtune  # noqa: F401  first: sets OpenMP's passive waiting before torch loads (lmtune/__init__.py)
    import openai
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from serve_static_engine import StaticEngine

    from lmtune.serve.app import create_app
    from lmtune.serve.engine import Engine
    from lmtune.serve.models import load_served
    from lmtune.serve.server import ThreadedServer

    served = load_served([args.model])
    name = next(iter(served))
    rows, reference = [], None
    common = {"bench": "serve_throughput", "model": args.model, "max_tokens": args.max_tokens,
              "torch_threads": torch.get_num_threads()}
    for engine_name, make in (("static", StaticEngine), ("continuous", Engine)):
        engine = make(served, max_batch=16)
        with ThreadedServer(create_app(engine)) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=1200)
            run_level(client, name, 1, 2, args.max_tokens)  # warm-up
            for c in (int(x) for x in args.concurrency.split(",")):
                calls = engine.calls
                row, answers = run_level(client, name, c, args.requests, args.max_tokens)
                reference = reference or answers
                row = {**common, "engine": engine_name, **row, "prompt_passes": engine.calls - calls,
                       "same_answers": answers == reference, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
                print(json.dumps(row), flush=True)
                rows.append(row)
            if args.long_tokens:
                row = {**common, "engine": engine_name, "measure": "short_beside_long",
                       "short_tokens": args.short_tokens, "long_tokens": args.long_tokens,
                       **short_beside_long(client, name, args.short_tokens, args.long_tokens),
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
