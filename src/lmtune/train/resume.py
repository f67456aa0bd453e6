"""--resume: which checkpoint a run continues from, whether it has already finished, what
train_summary.json records so the next --resume can tell, and which config changes a resume refuses
(lmtune/train/recipe.py calls these). Finding complete checkpoints on disk is the run directory's
job (lmtune/run/layout.py RunDir)."""

from __future__ import annotations

import json
from pathlib import Path

from lmtune.config import Config
from lmtune.errors import ConfigError
from lmtune.run.layout import RunDir
from lmtune.train import distributed


def stop_at_of(cfg: Config) -> dict:
    """What ends training: max_steps when set (epochs are then ignored), else epochs. Recorded in
    train_summary.json so that --resume can tell a finished run from one to continue or extend."""
    t = cfg.train
    return {"max_steps": t.max_steps} if t.max_steps > 0 else {"epochs": t.epochs}


def finished_summary(cfg: Config, run: RunDir, quiet: bool) -> dict | None:
    """--resume of a run whose final weights and train_summary.json were written for this config's
    stopping point: say so and return its train_summary.json (a raised max_steps/epochs
    continues it instead: None)."""
    name = "model" if cfg.method == "full" else "adapter"
    summary_path = run / "train_summary.json"
    if not (summary_path.is_file() and (run / name).is_dir()):
        return None
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    stop_at = summary.get("stop_at")
    if stop_at is None:  # a summary from before stop_at was recorded: only max_steps can be compared
        done = cfg.train.max_steps > 0 and summary.get("global_step") == cfg.train.max_steps
    else:
        done = stop_at == stop_at_of(cfg)
    if not done:
        return None
    if not quiet:
        print(f"{run.root} already finished training: {name}/ holds step {summary.get('global_step')} "
              f"(train_summary.json); nothing to train. To train longer, raise train.max_steps or "
              f"train.epochs and --resume again; to start over, use another output.dir or output.overwrite=true")
    return summary


def check_resume_steps(run: RunDir, max_steps: int) -> None:
    """A run resumes from a checkpoint at or before train.max_steps; one whose checkpoints are all
    past it cannot end there (nothing untrains a step)."""
    last = run.last_checkpoint()
    if max_steps > 0 and last is not None and run.last_checkpoint(max_step=max_steps) is None:
        raise ConfigError(f"--resume: every complete checkpoint is past train.max_steps={max_steps} "
                          f"(the last is {last})",
                          [f"set train.max_steps to at least the step of a checkpoint in {run.checkpoints}, "
                           "or start a new run in another output.dir"])


def resume_checkpoint(run: RunDir, max_steps: int) -> Path | None:
    """The last complete checkpoint at or before train.max_steps (the run ends exactly there: one
    saved at max_steps trains nothing more, see LmtuneSFTTrainer._init_training_state)."""
    dropped = _remove_partial_checkpoints(run)
    if dropped:
        print(f"ignored partial checkpoints: {', '.join(dropped)}")
    checkpoint = run.last_checkpoint(max_step=max_steps if max_steps > 0 else None)
    if checkpoint is None:
        print("no complete checkpoint to resume from: starting from step 0")
    else:
        print(f"resuming from {checkpoint.name}")
    return checkpoint


def _remove_partial_checkpoints(run: RunDir) -> list[str]:
    """Rank 0 deletes, the others wait (two ranks deleting one directory would race)."""
    dropped = run.remove_partial_checkpoints() if distributed.is_main_process() else []
    distributed.barrier()
    return dropped


# What the checkpoints depend on: resuming with any of these changed would load weights of another
# shape, feed other batches, or train another model under the same run name.
RESUME_KEYS = ("model.name_or_path", "model.revision", "method", "lora", "quant", "data.task", "data.train",
               "data.validation", "data.format", "data.template", "data.max_length", "data.packing",
               "data.train_on_prompt", "data.dedupe", "data.val_split", "data.seed", "data.system_prompt",
               "train.batch_size", "train.grad_accum", "train.seed",
               "distributed.nproc", "distributed.nnodes")  # process count changes the global batch


def resume_conflicts(saved: dict, new: dict) -> list[str]:
    """`key: the run used X, now Y` for every RESUME_KEYS value that differs (sections: per key).
    Keys the saved config lacks (an older lmtune) and sections the method does not use are skipped."""
    missing = object()

    def get(d, dotted):
        for part in dotted.split("."):
            d = d.get(part, missing) if isinstance(d, dict) else missing
        return d

    unused = {"full": ("lora", "quant"), "lora": ("quant",)}.get(new.get("method"), ())
    out = []
    for key in RESUME_KEYS:
        old, cur = get(saved, key), get(new, key)
        if old is missing or key in unused:
            continue
        if isinstance(old, dict) and isinstance(cur, dict):
            out += [f"{key}.{k}: the run used {v!r}, now {cur.get(k)!r}" for k, v in old.items() if cur.get(k) != v]
        elif old != cur:
            out.append(f"{key}: the run used {old!r}, now {cur!r}")
    return out
