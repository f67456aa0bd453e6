"""Run directories for the UI tests: the two real runs of eval_runs (trained and evaluated once per
session), copied under one RUNS_DIR, and helpers that put a copy into a given state."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from lmtune.run.layout import COMPLETE_MARKER, checkpoint_manifest


def runs_dir_of(tmp_path_factory, name: str = "runs") -> Path:
    from eval_runs import trained_runs

    runs = trained_runs(tmp_path_factory)
    root = tmp_path_factory.mktemp(name)
    for run in ("gentle", "harsh"):
        shutil.copytree(runs[run], root / run, ignore=shutil.ignore_patterns("adapter", "model", "checkpoints"))
    return root


def age(run: Path, seconds: float) -> None:
    """Make every file of the run look `seconds` old (a run that stopped writing)."""
    stamp = time.time() - seconds
    for path in [run, *run.rglob("*")]:
        os.utime(path, (stamp, stamp))


def unfinished(run: Path, checkpoint_step: int | None) -> Path:
    """The run as a kill leaves it: no train_summary.json/eval.json, optionally one complete checkpoint."""
    (run / "train_summary.json").unlink(missing_ok=True)
    (run / "eval.json").unlink(missing_ok=True)
    os.utime(run / "metrics.jsonl")   # just written to, as by a run in progress (copies keep old times)
    if checkpoint_step is not None:
        ckpt = run / "checkpoints" / f"checkpoint-{checkpoint_step}"
        ckpt.mkdir(parents=True)
        (ckpt / "adapter_model.safetensors").write_bytes(b"x" * 16)
        (ckpt / COMPLETE_MARKER).write_text(json.dumps({"files": checkpoint_manifest(ckpt)}))
    return run


def append_metric(run: Path, row: dict) -> None:
    """What train/callbacks.py's MetricsJsonl does on each log: one line appended and flushed."""
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")
