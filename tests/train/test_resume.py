"""--resume: continues from the checkpoint's state (step, weights, optimizer, LR schedule), ends
exactly at train.max_steps (also when the run was stopped after its last checkpoint and before the
final save), and trains nothing on a finished run. Tiny Llama, LoRA, real TRL training.

The interruptions are planted by test-only callbacks added to the real Trainer (by wrapping
lmtune.train.recipe._build_trainer): they raise where a kill would land, deterministically."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback

import lmtune.train.recipe as train_module
from lmtune.cli import main
from lmtune.run.layout import COMPLETE_MARKER, RunDir
from tiny_models import save_tiny_model, write_alpaca

MAX_STEPS = 4


def _config(root: Path, model: Path, data: Path, out: Path, **train) -> Path:
    cfg = {"model": {"name_or_path": str(model)},
           "data": {"train": [str(data)], "val_split": 0.0, "max_length": 96, "template": "alpaca"},
           "train": {"max_steps": MAX_STEPS, "batch_size": 2, "grad_accum": 1, "learning_rate": 5e-3,
                     "warmup_ratio": 0, "scheduler": "linear", "logging_steps": 1, "save_steps": 2,
                     "save_total_limit": 5, "load_best": False, "threads": 1, **train},
           "eval": {"after_train": False, "forgetting_check": False},
           "output": {"dir": str(out), "report": False}}
    path = root / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


Finished = namedtuple("Finished", "root base data run")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Finished:
    """An uninterrupted 4-step run (checkpoints at 2 and 4): the reference. 24 rows, 2 per step,
    so step 4 is in the middle of the first epoch (where transformers' resume overshot)."""
    root = tmp_path_factory.mktemp("resume")
    base = save_tiny_model(root / "base", "llama")
    data = write_alpaca(root / "train.jsonl", 24)
    run = root / "run"
    assert main(["train", str(_config(root, base, data, run))]) == 0
    return Finished(root, base, data, run)


class _Killed(BaseException):
    """Raised by a planted callback where a kill would land; BaseException: nothing catches it."""


def _plant(monkeypatch, callback: TrainerCallback) -> None:
    """Add `callback` (after lmtune's own, so it sees their work done) to the next run's Trainer."""
    real = train_module._build_trainer

    def build(cfg, run, setup, *extra):
        trainer = real(cfg, run, setup, *extra)
        trainer.add_callback(callback)
        return trainer

    monkeypatch.setattr(train_module, "_build_trainer", build)


def _adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def _loss_steps(run: Path) -> list[int]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss" in r]


def _copy_unfinished(finished: Finished, dst: Path, keep_upto: int) -> Path:
    """The finished run as a kill after checkpoint-`keep_upto` would have left it."""
    shutil.copytree(finished.run, dst)
    shutil.rmtree(dst / "adapter")
    (dst / "train_summary.json").unlink()
    for ckpt in RunDir(dst).complete_checkpoints():
        if int(ckpt.name.split("-")[1]) > keep_upto:
            shutil.rmtree(ckpt)
    return dst


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_kill_after_the_last_checkpoint_before_the_final_save_trains_no_extra_step(finished, tmp_path,
                                                                                   monkeypatch, capsys):
    class KillAfterLastCheckpoint(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == MAX_STEPS:  # marker written (lmtune's callback ran first)
                raise _Killed

    run = tmp_path / "run"
    cfg = _config(tmp_path, finished.base, finished.data, run)
    _plant(monkeypatch, KillAfterLastCheckpoint())
    with pytest.raises(_Killed):
        main(["train", str(cfg)])
    monkeypatch.undo()
    assert (run / "checkpoints" / f"checkpoint-{MAX_STEPS}" / COMPLETE_MARKER).is_file()
    assert not (run / "adapter").exists() and not (run / "train_summary.json").exists()

    capsys.readouterr()
    assert main(["train", str(cfg), "--resume"]) == 0
    assert f"resuming from checkpoint-{MAX_STEPS}" in capsys.readouterr().out
    assert _loss_steps(run) == list(range(1, MAX_STEPS + 1))
    assert json.loads((run / "train_summary.json").read_text())["global_step"] == MAX_STEPS
    a, b = _adapter(finished.run), _adapter(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_from_the_checkpoints_step_weights_optimizer_and_schedule(finished, tmp_path,
                                                                                  monkeypatch):
    """Training from step 0 with the checkpoint found (or from fresh optimizer state) would still end
    near the same weights on this deterministic run; the state at the first resumed step cannot."""
    run = _copy_unfinished(finished, tmp_path / "run", keep_upto=2)
    ckpt = run / "checkpoints" / "checkpoint-2"
    seen = {}

    class FirstStep(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, optimizer=None, lr_scheduler=None, **kw):
            if not seen:
                # deep copies: the state dicts hold the live tensors, which the step then updates
                seen.update(step=state.global_step, optimizer=copy.deepcopy(optimizer.state_dict()),
                            lr=list(lr_scheduler.get_last_lr()), scheduler=copy.deepcopy(lr_scheduler.state_dict()),
                            weights={k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad})

    _plant(monkeypatch, FirstStep())
    assert main(["train", str(_config(tmp_path, finished.base, finished.data, run)), "--resume"]) == 0
    assert seen["step"] == 2
    saved_opt = torch.load(ckpt / "optimizer.pt", weights_only=True)
    assert saved_opt["state"] and seen["optimizer"]["state"].keys() == saved_opt["state"].keys()
    for i, saved in saved_opt["state"].items():
        live = seen["optimizer"]["state"][i]
        assert float(live["step"]) == float(saved["step"]) == 2.0
        assert torch.equal(live["exp_avg"], saved["exp_avg"]) and torch.equal(live["exp_avg_sq"], saved["exp_avg_sq"])
    saved_sched = torch.load(ckpt / "scheduler.pt", weights_only=True)
    assert seen["scheduler"]["last_epoch"] == saved_sched["last_epoch"] == 2
    assert seen["lr"] == saved_sched["_last_lr"]
    assert all(lr == pytest.approx(5e-3 * (MAX_STEPS - 2) / MAX_STEPS) for lr in seen["lr"])  # linear decay
    saved_w = load_file(str(ckpt / "adapter_model.safetensors"))
    live_w = {k.replace(".default", ""): v for k, v in seen["weights"].items()}
    assert saved_w.keys() == live_w.keys() and all(torch.equal(saved_w[k], live_w[k]) for k in saved_w)
    # and it ends where the uninterrupted run ended
    assert _loss_steps(run) == list(range(1, MAX_STEPS + 1))
    a, b = _adapter(finished.run), _adapter(run)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6


def test_resume_of_a_finished_run_says_so_and_changes_nothing(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished.run, run)
    before = _snapshot(run)
    capsys.readouterr()
    assert main(["train", str(_config(tmp_path, finished.base, finished.data, run)), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "already finished training" in out and f"holds step {MAX_STEPS}" in out
    assert _snapshot(run) == before


def test_resume_with_another_max_steps_ends_exactly_there(finished, tmp_path, capsys):
    """Raised: continues from the last checkpoint to the new count. Lowered: from the last
    checkpoint at or before it. Below every checkpoint: refused, nothing changed."""
    run = tmp_path / "run"
    shutil.copytree(finished.run, run)
    cfg = _config(tmp_path, finished.base, finished.data, run)
    assert main(["train", str(cfg), "--resume", "train.max_steps=6"]) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["global_step"] == 6 and summary["stop_at"] == {"max_steps": 6}
    assert _loss_steps(run) == [1, 2, 3, 4, 5, 6]

    capsys.readouterr()
    assert main(["train", str(cfg), "--resume", "train.max_steps=3"]) == 0
    assert "resuming from checkpoint-2" in capsys.readouterr().out
    assert json.loads((run / "train_summary.json").read_text())["global_step"] == 3
    assert _loss_steps(run) == [1, 2, 3]

    shutil.rmtree(run / "checkpoints" / "checkpoint-2")
    before = _snapshot(run)
    assert main(["train", str(cfg), "--resume", "train.max_steps=1"]) == 2
    err = capsys.readouterr().err
    assert "every complete checkpoint is past train.max_steps=1" in err and "checkpoint-" in err
    assert _snapshot(run) == before
