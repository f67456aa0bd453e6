"""CPU data-parallel scaling: 1 process vs 2 DDP processes (gloo), the same global batch.

Every recipe is a real `lmtune train` command in a fresh process, on the same model, data, seed and
number of optimizer steps. The micro-batch shape is the same everywhere (--micro-batch examples
per forward pass); only who computes the micro-batches of one step changes:

    1p-2t   1 process, 2 threads, grad_accum 2   (the two micro-batches one after the other)
    2p-1t   2 processes, 1 thread each, grad_accum 1 (one micro-batch per process, then all-reduce)
    1p-1t   1 process, 1 thread, grad_accum 2    (per-core baseline)

    nice .venv/bin/python benchmarks/ddp_scaling.py                      # embedded base, else random-5m
    nice .venv/bin/python benchmarks/ddp_scaling.py --model random-5m --steps 30 --rounds 2

Prints one JSON line per run (also appended to --out) and a markdown table. train_s is the
Trainer's own train_runtime (no imports, no data preparation, no final save); wall_s is the whole
command; cpu_s the CPU seconds of all its processes (imports included). Ratios are against 1p-2t
from the same round. On a shared machine, compare load averages: under contention the scheduler
gives a 2-process job about twice the CPU share of a 1-process job, which flatters DDP.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_models import REPO, count_params, resolve_model  # noqa: E402

# label -> (processes, threads per process, grad_accum)
RECIPES = {"1p-2t": (1, 2, 2), "2p-1t": (2, 1, 1), "1p-1t": (1, 1, 2)}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="auto", help="auto (embedded base if built, else random-5m), tiny, "
                                                   "random-5m, random-30m or a model directory")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps per run")
    p.add_argument("--micro-batch", type=int, default=2, help="examples (packed rows) per forward pass")
    p.add_argument("--rounds", type=int, default=1, help="repeat all recipes, interleaved")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated subset of " + ", ".join(RECIPES))
    p.add_argument("--work", type=Path, default=Path("/tmp/lmtune-bench-ddp"))
    p.add_argument("--out", type=Path, default=HERE / "results" / "ddp_scaling.jsonl")
    p.add_argument("--timeout", type=int, default=900)
    return p.parse_args()


def pick_model(name: str, work: Path) -> Path:
    if name == "auto":
        tiny = REPO / "src" / "lmtune" / "assets" / "base" / "tiny"
        name = "tiny" if (tiny / "config.json").is_file() else "random-5m"
    return resolve_model(name, work)


def run_recipe(label: str, model: Path, args: argparse.Namespace, round_: int) -> dict:
    nproc, threads, accum = RECIPES[label]
    run_dir = args.work / "runs" / f"{label}-r{round_}"
    cmd = [sys.executable, "-m", "lmtune", "train", str(REPO / "benchmarks" / "ddp_scaling.yaml"),
           f"model.name_or_path={model}", f"output.dir={run_dir}", f"train.max_steps={args.steps}",
           f"train.batch_size={args.micro_batch}", f"train.grad_accum={accum}", f"train.threads={threads}",
           "--nproc", str(nproc)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    load_before = os.getloadavg()[0]
    cpu_before = _children_cpu()
    started = time.time()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    wall = time.time() - started
    cpu = _children_cpu() - cpu_before
    if done.returncode != 0:
        raise SystemExit(f"{label} failed ({done.returncode}):\n{(done.stdout + done.stderr)[-3000:]}")
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r for r in rows if "loss" in r]
    end = next(r for r in rows if "train_runtime" in r)
    tokens = losses[-1].get("num_tokens")
    return {"recipe": label, "round": round_, "processes": nproc, "threads": threads, "grad_accum": accum,
            "micro_batch": args.micro_batch, "global_batch": args.micro_batch * nproc * accum,
            "steps": end["step"], "train_s": round(end["train_runtime"], 2), "wall_s": round(wall, 1),
            "tokens": tokens, "tokens_per_s": round(tokens / end["train_runtime"], 1) if tokens else None,
            "first_loss": round(losses[0]["loss"], 5), "final_loss": round(losses[-1]["loss"], 5),
            "cpu_s": round(cpu, 1), "load_avg_before": round(load_before, 2), "load_avg_after": round(os.getloadavg()[0], 2)}


def _children_cpu() -> float:
    """CPU seconds (user + system) of finished child processes, all workers included."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def table(results: list[dict]) -> str:
    base = {r["round"]: r for r in results if r["recipe"] == "1p-2t"}
    lines = ["| recipe | processes x threads | global batch | train s | tokens/s | speed vs 1p-2t | "
             "final loss | wall s | CPU s (all processes) | load avg |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        ref = base.get(r["round"])
        ratio = f"{ref['train_s'] / r['train_s']:.2f}x" if ref else "-"
        lines.append(f"| {r['recipe']} (round {r['round']}) | {r['processes']} x {r['threads']} | "
                     f"{r['global_batch']} | {r['train_s']} | {r['tokens_per_s']} | {ratio} | "
                     f"{r['final_loss']} | {r['wall_s']} | {r['cpu_s']} | {r['load_avg_before']} |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    model = pick_model(args.model, args.work)
    print(json.dumps({"model": str(model), "params": count_params(model), "cpu_count": os.cpu_count()}))
    results = []
    for round_ in range(1, args.rounds + 1):
        for label in args.recipes.split(","):
            row = run_recipe(label.strip(), model, args, round_)
            print(json.dumps(row), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            with args.out.open("a") as fh:
                fh.write(json.dumps({**row, "model": str(model)}) + "\n")
            results.append(row)
    print(table(results))


if __name__ == "__main__":
    main()
