"""Trainer callbacks: metrics.jsonl, a stop on NaN/inf, the checkpoint-complete marker, GRPO's
early warning when its groups give nothing to learn from, and the console's progress bar."""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from lmtune.run.layout import COMPLETE_MARKER, checkpoint_manifest, write_text


class MetricsJsonl(TrainerCallback):
    """One JSON object per log step (train loss, lr, grad norm, eval loss), appended and flushed.
    A training row with TRL's running num_tokens also gets tokens_per_second: the tokens trained
    since the previous such row over the wall-clock time between them, evaluations left out (the
    UI plots it)."""

    def __init__(self, path: Path, perplexity: bool = True):
        self.path = path
        self.perplexity = perplexity   # exp(eval_loss) is a perplexity for SFT only, not for a DPO loss
        self._tokens: tuple[float, float] | None = None    # (monotonic time, num_tokens) at the last row

    def on_train_begin(self, args, state, control, **kwargs):
        """On resume, drop the rows logged after the checkpoint (they are logged again) and a last
        line cut by a kill, so the file reads as one clean run."""
        # a fresh run counts from 0 tokens now; a resumed one's count is known from its first row on
        self._tokens = (time.monotonic(), 0.0) if state.global_step == 0 else None
        if not state.is_world_process_zero or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("step", 0) <= state.global_step and "train_runtime" not in row:
                kept.append(line + "\n")
        write_text(self.path, "".join(kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4), **logs}
        if "eval_loss" in logs and self.perplexity:
            row["eval_perplexity"] = math.exp(min(logs["eval_loss"], 50.0))
        seen, now = logs.get("num_tokens"), time.monotonic()
        if "loss" in logs and isinstance(seen, (int, float)):
            if self._tokens is not None and now > self._tokens[0] and seen >= self._tokens[1]:
                row["tokens_per_second"] = round((seen - self._tokens[1]) / (now - self._tokens[0]), 1)
            self._tokens = (now, seen)
        elif "eval_loss" in logs and self._tokens is not None:   # evaluation time is not training time
            self._tokens = (now, self._tokens[1])
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


class GroupSpreadWatch(TrainerCallback):
    """GRPO learns only from groups whose sampled answers score differently. After the first
    `window` steps (a quarter of a short run), warn once if they gave little to learn from: no
    sampled answer earned any task reward (a start that is seldom right, or sampling too hot), or
    most groups scored the same for every answer. Said early, so a doomed run can be stopped, and
    kept in `warning` (train_summary.json lists it)."""

    NO_TASK_REWARD = 0.01      # mean task reward below this: no answer was right
    FLAT = 0.8                 # share of groups without spread at or above this: little to learn

    def __init__(self, window: int = 20):
        self.window = window
        self.rows: list[dict] = []
        self.done = False
        self.warning: str | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.window = max(1, min(self.window, (state.max_steps or self.window) // 4))
        self.done = state.global_step > 0   # a resumed run had its verdict before the kill

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.done or not state.is_world_process_zero or not logs or "frac_reward_zero_std" not in logs:
            return
        self.rows.append(logs)
        if state.global_step < self.window:
            return
        self.done = True    # one verdict per run, on its first steps
        self.warning = group_spread_warning(self.rows, state.global_step)
        if self.warning:
            from tqdm.auto import tqdm   # between the progress bar's redraws, not over them

            tqdm.write(f"warning: {self.warning}", file=sys.stderr)


def group_spread_warning(rows: list[dict], step: int) -> str | None:
    """The warning for the logged GRPO rows of steps 1..step, or None when the groups had spread."""
    flat = sum(r["frac_reward_zero_std"] for r in rows) / len(rows)
    task = [r["rewards/task/mean"] for r in rows if "rewards/task/mean" in r]
    task_mean = sum(task) / len(task) if task else None
    fixes = ("lower rl.temperature (e.g. 0.7: samples nearer the model's best guess), raise "
             "rl.num_generations, or start from a longer SFT run")
    if task_mean is not None and task_mean < GroupSpreadWatch.NO_TASK_REWARD:
        return (f"GRPO steps 1-{step}: the sampled answers earned almost no task reward (mean "
                f"{task_mean:.3f}), so the task reward has nothing to push up; {fixes}")
    if flat >= GroupSpreadWatch.FLAT:
        seen = f" (mean task reward {task_mean:.2f})" if task_mean is not None else ""
        why = (fixes if task_mean is None or task_mean < 0.5 else
               "the start already answers these prompts alike every time: harder prompts teach more")
        return (f"GRPO steps 1-{step}: {flat:.0%} of the groups scored every answer the same{seen}, "
                f"and such a group has nothing to learn from; {why}")
    return None


class MarkCheckpointComplete(TrainerCallback):
    """The Trainer writes a checkpoint file by file; on_save runs after the last file, so a marker
    written then (atomically) tells resume which checkpoints are whole. The marker lists every file
    with its size (see rundir.checkpoint_is_complete). A checkpoint whose trainable weights are not
    finite gets no marker and stops training: resume must never pick a diverged state."""

    def __init__(self, card=None):
        self.bad: dict | None = None
        self.card = card  # state -> README.md text, written before the marker lists the files

    def on_save(self, args, state, control, model=None, **kwargs):
        bad = _non_finite_parameter(model)
        # Every rank checks its weights (FSDP shards differ) and all must agree to stop; the
        # collective is also the barrier that waits for each rank's own files (rng_state_<rank>.pth).
        if _on_any_rank(bad is not None, model):
            self.bad = {"step": state.global_step, "key": f"weight {bad or '(on another rank)'}",
                        "value": float("nan")}
            control.should_training_stop = True
            return
        ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and ckpt.is_dir():
            if self.card is not None:
                write_text(ckpt / "README.md", self.card(state))
            write_text(ckpt / COMPLETE_MARKER,
                       json.dumps({"step": state.global_step, "files": checkpoint_manifest(ckpt)}, indent=1))


def _on_any_rank(flag: bool, model) -> bool:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return flag
    device = next(model.parameters()).device if model is not None else torch.device("cpu")
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _non_finite_parameter(model) -> str | None:
    """Name of the first trainable parameter holding NaN/inf (one pass over the trainable
    weights, only at save time)."""
    if model is None:
        return None
    import torch

    for name, p in model.named_parameters():
        if p.requires_grad and not torch.isfinite(p.detach()).all():
            return name
    return None


class ConsoleProgress(ProgressCallback):
    """The Trainer's bars (one for training, one per evaluation) with loss, learning rate and tokens/s
    on the training bar (tqdm adds the ETA), instead of each log dict printed over the bar. An
    evaluation prints one line. metrics.jsonl and TensorBoard get every value as before. `step` is
    the last finished optimizer step (the Ctrl-C message names it)."""

    current: "ConsoleProgress | None" = None  # the running trainer's, for the Ctrl-C message

    def __init__(self):
        super().__init__()
        self.step = 0
        self.max_steps = 0
        self._tokens: tuple[float, float] | None = None  # (time, num_tokens) at the previous log

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        self.step, self.max_steps = state.global_step, state.max_steps
        self.current_step = state.global_step
        ConsoleProgress.current = self
        if state.is_world_process_zero:  # a resumed run starts its bar where it stands
            self.training_bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train",
                                     dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        self.step = state.global_step
        super().on_step_end(args, state, control, **kwargs)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        from tqdm.auto import tqdm
        from transformers.trainer_utils import has_length

        if state.is_world_process_zero and has_length(eval_dataloader) and self.prediction_bar is None:
            self.prediction_bar = tqdm(total=len(eval_dataloader), desc="eval", leave=False, dynamic_ncols=True)
        super().on_prediction_step(args, state, control, eval_dataloader=eval_dataloader, **kwargs)

    def on_log(self, args, state, control, logs=None, **kwargs):
        bar = self.training_bar
        if not state.is_world_process_zero or not logs or bar is None:
            return
        if "loss" in logs:
            post = {"loss": f"{logs['loss']:.4f}", "lr": f"{logs.get('learning_rate', 0.0):.2e}"}
            now, seen = time.monotonic(), logs.get("num_tokens")
            if seen is not None:
                if self._tokens is not None and now > self._tokens[0] and seen >= self._tokens[1]:
                    post["tok/s"] = f"{(seen - self._tokens[1]) / (now - self._tokens[0]):.0f}"
                self._tokens = (now, seen)
            bar.set_postfix(post, refresh=True)
        elif "eval_loss" in logs:
            loss = logs["eval_loss"]
            bar.write(f"step {state.global_step}: validation loss {loss:.4f} "
                      f"(perplexity {math.exp(min(loss, 50.0)):.2f})")
