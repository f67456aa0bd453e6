"""Seconds per packed training row of the main job (forward + backward, no optimizer), in one process.

Builds the main job's trainer with lmtune's own setup (configs/tiny-sql-lora.yaml, one process),
takes its first packed rows and times forward+backward of each, for every variant given, in
interleaved rounds; the loss sums must agree across variants (they compute the same thing). Used
for the OpenMP thread and waiting-policy measurements in benchmarks/README.md, which need the
environment set before torch loads, e.g.:

    .venv/bin/python benchmarks/cpu_step.py                                  # defaults vs TRL's head, SDPA
    OMP_WAIT_POLICY=ACTIVE .venv/bin/python benchmarks/cpu_step.py --threads 2
    GOMP_SPINCOUNT=10000 .venv/bin/python benchmarks/cpu_step.py --threads 2 & \\
      GOMP_SPINCOUNT=10000 .venv/bin/python benchmarks/cpu_step.py --threads 2; wait   # two at once

A variant is LM_HEAD+ATTENTION: label_logits|fused + auto|sdpa (auto = lmtune's choice).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="label_logits+auto,fused+sdpa")
    ap.add_argument("--threads", type=int, default=None, help="train.threads (default: lmtune's)")
    ap.add_argument("--rows", type=int, default=8, help="timed rows per variant and round")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lmtune.train.cpu_tuning import set_wait_policy

    set_wait_policy("passive")  # before torch loads, as the CLI does (lmtune/train/cpu_tuning.py)
    import torch

    results: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for variant in args.variants.split(","):
            results.setdefault(variant, []).append(time_variant(variant, args.rows, args.threads))
    print(f"threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, "
          f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT')}")
    for variant, runs in results.items():
        print(f"{variant:24s} s/row " + " ".join(f"{s:.3f}" for s, _ in runs) + f"   loss sum {runs[0][1]:.5f}")


def time_variant(variant: str, rows: int, threads: int | None) -> tuple[float, float]:
    import torch

    import lmtune.train.recipe as lt
    from lmtune.config import load_config
    from lmtune.train.cpu_tuning import Target, apply
    from lmtune.models import resolve_model_path
    from lmtune.run.layout import RunDir

    head, attention = variant.split("+")
    overrides = ["output.dir=/tmp/lmtune-cpu-step", "output.overwrite=true", "data.val_split=0",
                 "output.report=false", "distributed.backend=none", "distributed.nproc=1",
                 f"train.lm_head={head}"]
    if threads:
        overrides.append(f"train.threads={threads}")
    if attention != "auto":
        overrides.append(f"model.attn_implementation={attention}")
    cfg = load_config(str(ROOT / "configs" / "tiny-sql-lora.yaml"), overrides)
    apply(Target(cfg, resolve_model_path(cfg.model.name_or_path), training=True))  # as the CLI does
    run = RunDir(cfg.output.dir)
    trainer = lt._build_trainer(cfg, run, lt._setup(cfg, run, resume=False))
    model = trainer.model
    model.train()
    batches = [b for _, b in zip(range(rows + 1), trainer.get_train_dataloader())]

    def step(batch) -> float:
        loss = trainer.compute_loss(model, batch, num_items_in_batch=torch.tensor(700))
        loss.backward()
        return loss.item()

    step(batches[0])                                   # warm-up row, not timed
    started = time.perf_counter()
    total = sum(step(b) for b in batches[1:])
    return (time.perf_counter() - started) / rows, total


if __name__ == "__main__":
    sys.exit(main())
