"""Trainer callbacks: metrics.jsonl, a stop on NaN/inf, and the checkpoint-complete marker."""

from __future__ import annotations

import json
import math
from pathlib import Path

from transformers import TrainerCallback

from lmtune.rundir import COMPLETE_MARKER, write_text


class MetricsJsonl(TrainerCallback):
    """One JSON object per log step (train loss, lr, grad norm, eval loss), appended and flushed."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
        if "eval_loss" in logs:
            row["eval_perplexity"] = math.exp(min(logs["eval_loss"], 50.0))
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")


class NonFiniteGuard(TrainerCallback):
    """Stop at the first non-finite loss or gradient norm; the last complete checkpoint is kept."""

    def __init__(self):
        self.bad: dict | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or self.bad:
            return
        for key in ("loss", "grad_norm", "eval_loss"):
            value = logs.get(key)
            if value is not None and not math.isfinite(float(value)):
                self.bad = {"step": state.global_step, "key": key, "value": float(value)}
                control.should_training_stop = True
                control.should_save = False
                return


class MarkCheckpointComplete(TrainerCallback):
    """The Trainer writes a checkpoint file by file; on_save runs after the last file, so a marker
    written then (atomically) tells resume which checkpoints are whole."""

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                write_text(ckpt / COMPLETE_MARKER, json.dumps({"step": state.global_step}))
