"""Seconds per optimizer step of each train.objective against SFT, same model, data and batch.

One process, one thread, the embedded `tiny` base with LoRA (r=16, all-linear), on SQL preference
pairs from scripts/sql_pairs.py. SFT trains on the same records' prompt + chosen answer as chat
examples (packing off, so an SFT step sees as many examples as a DPO step sees pairs). Each
objective's steps are timed by a callback (optimizer step to optimizer step, the first two
dropped: warm-up); the median is reported, and its ratio to SFT's, measured in the same script:

    .venv/bin/python benchmarks/objectives.py [--steps 20] [--batch 4] [--rounds 1] [--objectives sft,dpo,orpo,kto]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _write_data(tmp: Path) -> dict[str, Path]:
    pairs = tmp / "pairs.jsonl"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "sql_pairs.py"), "--out", str(pairs), "--n", "400"],
                   check=True, capture_output=True)
    rows = [json.loads(line) for line in pairs.read_text().splitlines()]
    sft, kto = tmp / "sft.jsonl", tmp / "kto.jsonl"
    sft.write_text("".join(json.dumps({"messages": [{"role": "user", "content": r["prompt"]},
                                                    {"role": "assistant", "content": r["chosen"]}]}) + "\n"
                           for r in rows))
    kto.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["chosen" if i % 2 else "rejected"],
                                       "label": bool(i % 2)}) + "\n" for i, r in enumerate(rows)))
    return {"sft": sft, "dpo": pairs, "orpo": pairs, "kto": kto}


def _step_times(objective: str, data: Path, out: Path, steps: int, batch: int) -> list[float]:
    from transformers import TrainerCallback

    from lmtune.config import load_config
    from lmtune.train.recipe import train

    class Clock(TrainerCallback):
        def __init__(self):
            self.times = []

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter())

    clock = Clock()
    cfg = load_config(None, ["model.name_or_path=tiny", f"data.train={data}", f"output.dir={out}",
                             f"train.objective={objective}", "data.val_split=0", "data.packing=false",
                             "data.max_length=256", f"train.max_steps={steps}", f"train.batch_size={batch}",
                             "train.grad_accum=1", "train.learning_rate=1e-4", "train.threads=1",
                             "train.logging_steps=5", "eval.after_train=false", "output.report=false",
                             "data.cache=false"])
    train(cfg, quiet=True, callbacks=[clock])
    return [b - a for a, b in zip(clock.times, clock.times[1:])][1:]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=4, help="examples (SFT, KTO) or pairs (DPO, ORPO) per step")
    ap.add_argument("--objectives", default="sft,dpo,orpo,kto")
    ap.add_argument("--rounds", type=int, default=1,
                    help="runs of every objective, in a rotated order each round, so load drift on a "
                         "shared machine falls on all of them")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    names = args.objectives.split(",")
    times: dict[str, list[float]] = {n: [] for n in names}
    rounds: dict[str, list[float]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="lmtune-bench-objectives-") as tmp:
        files = _write_data(Path(tmp))
        for r in range(args.rounds):
            for objective in names[r % len(names):] + names[: r % len(names)]:
                got = _step_times(objective, files[objective], Path(tmp) / f"run-{objective}-{r}", args.steps,
                                  args.batch)
                times[objective] += got
                rounds[objective].append(statistics.median(got))
    sft = statistics.median(times["sft"]) if "sft" in times else None
    print(f"{'objective':10} {'s/step (median)':>16} {'x SFT':>7}  per round")
    for objective in names:
        seconds = statistics.median(times[objective])
        ratio = f"{seconds / sft:.2f}" if sft else "-"
        print(f"{objective:10} {seconds:16.3f} {ratio:>7}  {' '.join(f'{x:.3f}' for x in rounds[objective])}")


if __name__ == "__main__":
    main()
