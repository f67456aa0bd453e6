"""Full vs LoRA vs QLoRA on the bundled SQL task, plus an aggressive full fine-tune, on the embedded
base: each run is the shipped preset (configs/tiny-sql-{full,lora,qlora}.yaml) in its own
`lmtune train` process (so peak memory is each run's own), each ending with train's evaluation
(task metric base vs tuned, forgetting check); then `lmtune compare`.

    python benchmarks/eval_methods.py --out build/eval-methods                 # docs/training.md's numbers
    python benchmarks/eval_methods.py --out /tmp/em --max-steps 20 --num-samples 40   # a quick look
    python benchmarks/eval_methods.py --out DIR --parallel 2 --threads 1      # two runs at a time

Prints one JSON line per run, then the compare table; writes OUT/compare.md and OUT/compare.html.
The claim it measures (the seed's): LoRA reaches 95-99% of full fine-tuning, QLoRA about 96%; a
gentle LoRA keeps general text (forgetting ok), an aggressive full fine-tune does not.
With --parallel 2 --threads 1 two runs share the 2 cores, one each: train times compare with each
other, not with a run that had both cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PRESET = str(ROOT / "configs" / "tiny-sql-{}.yaml")

# name -> (preset, overrides). "full-aggressive" is deliberately too much: 10x the full preset's
# learning rate, held constant, for one epoch (already flagged; see docs/training.md).
# The LoRA preset trains with two DDP workers x grad_accum 4; the runs here are one process each
# (two runs side by side with --parallel 2), with the same 8 packed rows per optimizer step.
ONE = ["distributed.nproc=1", "train.grad_accum=8"]
RUNS = {
    "full": ("full", []),
    "lora": ("lora", ONE),
    "qlora": ("qlora", []),
    "full-aggressive": ("full", ["train.learning_rate=5e-3", "train.epochs=1", "train.scheduler=constant",
                                 "train.warmup_ratio=0"]),
    "lora-lr1e-3": ("lora", [*ONE, "train.learning_rate=1e-3"]),
    # half the tokens, as many optimizer steps (148): is one epoch enough for the main job?
    "lora-1ep-a4": ("lora", ["distributed.nproc=1", "train.epochs=1", "train.grad_accum=4"]),
    "lora-1ep-a4-lr4e-3": ("lora", ["distributed.nproc=1", "train.epochs=1", "train.grad_accum=4",
                                    "train.learning_rate=4e-3"]),
}


def start_one(name: str, out: Path, common: list[str]) -> subprocess.Popen:
    preset, overrides = RUNS[name]
    run_dir = out / name
    cmd = [sys.executable, "-m", "lmtune", "train", PRESET.format(preset), *common, *overrides,
           f"output.dir={run_dir}", "output.overwrite=true"]
    log = open(out / f"{name}.log", "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)


def result(name: str, out: Path, wall: float) -> dict:
    run_dir = out / name
    ev = json.loads((run_dir / "eval.json").read_text())
    summary = json.loads((run_dir / "train_summary.json").read_text())
    task, forget = ev.get("task") or {}, ev.get("forgetting") or {}
    prim = task.get("primary")
    return {"run": name, "method": summary["method"], "overrides": RUNS[name][1], "wall_seconds": round(wall, 1),
            "train_seconds": summary["train_seconds"], "peak_memory_mb": summary["peak_memory_mb"],
            "trainable_params": summary["trainable_params"],
            "eval_loss": (ev.get("validation") or {}).get("tuned", {}).get("loss"),
            "metric": prim, "tuned": (task.get("tuned") or {}).get(prim), "base": (task.get("base") or {}).get(prim),
            "forgetting_ratio": forget.get("ratio"), "forgetting": forget.get("verdict")}


def run_all(names: list[str], out: Path, common: list[str], parallel: int) -> None:
    """At most `parallel` training processes at once; a JSON line per run as each finishes."""
    pending, running = list(names), {}
    while pending or running:
        while pending and len(running) < parallel:
            name = pending.pop(0)
            running[name] = (start_one(name, out, common), time.time())
        time.sleep(2)
        for name, (proc, t0) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[name]
            if proc.returncode != 0:
                print(json.dumps({"run": name, "failed": proc.returncode, "log": str(out / f"{name}.log")}), flush=True)
                continue
            print(json.dumps(result(name, out, time.time() - t0)), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--epochs", type=float, default=None, help="override every preset's epochs")
    ap.add_argument("--max-steps", type=int, default=None, help="cap every run (quick look)")
    ap.add_argument("--parallel", type=int, default=1, help="training processes at once")
    ap.add_argument("--num-samples", type=int, default=None, help="test examples scored (default all 200)")
    ap.add_argument("--runs", nargs="+", default=["full", "lora", "qlora", "full-aggressive"], choices=list(RUNS))
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per run (1 is much faster on a machine shared with other jobs)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    common = ["output.report=true", "eval.after_train=true", "eval.forgetting_check=true"]
    if args.epochs is not None:
        common.append(f"train.epochs={args.epochs}")
    if args.max_steps is not None:
        common.append(f"train.max_steps={args.max_steps}")
    if args.threads:
        common.append(f"train.threads={args.threads}")
    if args.num_samples:
        common.append(f"eval.num_samples={args.num_samples}")
    run_all(args.runs, args.out, common, args.parallel)
    dirs = [str(args.out / n) for n in args.runs]
    subprocess.run([sys.executable, "-m", "lmtune", "compare", *dirs, "--markdown", str(args.out / "compare.md"),
                    "--html", str(args.out / "compare.html")], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
