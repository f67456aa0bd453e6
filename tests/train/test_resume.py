"""--resume: continues from the checkpoint's state (step, weights, optimizer, LR schedule), ends
exactly at train.max_steps (also when the run was stopped after its last checkpoint and before the
final save), trains nothing on a finished run, and matches the uninterrupted run after kill -9 twice
(scripts/kill_resume.py). Tiny Llama, LoRA, real TRL training. Then lmtune/train/resume.py called
directly on real files (which checkpoint --resume picks or refuses, when a run counts as finished)
and metrics.jsonl cut back to the checkpoint.

The interruptions are planted by test-only callbacks added to the real Trainer (by wrapping
lmtune.train.recipe._build_trainer): they raise where a kill would land, deterministically.
Elsewhere: resume in the recipe's preflight, fit and setup (test_recipe.py, test_recipe_setup.py,
test_recipe_train.py), at max_steps in the trainer (test_trainer.py), the config conflicts
(test_resume_conflicts.py), a torn checkpoint (test_reliability_runs.py), under DDP
(test_distributed_ddp.py)."""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import TrainerCallback
from transformers.trainer_callback import TrainerControl, TrainerState

import lmtune.train.recipe as train_module
from lmtune.cli import main
from lmtune.config import load_config
from lmtune.errors import ConfigError
from lmtune.run.layout import COMPLETE_MARKER, RunDir, checkpoint_manifest
from lmtune.train.callbacks import MetricsJsonl
from lmtune.train.resume import check_resume_steps, finished_summary, resume_checkpoint, stop_at_of
from tiny_models import save_tiny_model, write_alpaca

MAX_STEPS = 4
ROOT = Path(__file__).resolve().parents[2]


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


# ---------------------------------------------------------------- kill -9 and resume

def test_kill_resume_twice_matches_the_uninterrupted_run(tmp_path):
    """scripts/kill_resume.py with 2 SIGKILLs (forked launches: the imports happen once)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import kill_resume
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    result = kill_resume.kill_resume(kills=2, seed=3, work=tmp_path, launcher_kind="fork", model=None,
                                     max_steps=6, save_steps=2, tol=1e-4)
    assert result["problems"] == [] and result["ok"], json.dumps(result, indent=1)
    assert result["kills_landed"] == 2
    assert result["max_abs_weight_diff"] <= 1e-4 and result["final_loss_diff"] <= 1e-4
    assert result["logged_steps"] == 6  # metrics.jsonl reads as one clean run after two kills
    assert not result["unmarked_checkpoint_used"]


# ---------------------------------------------------------------- resume.py: which checkpoint, finished or not

def _cfg(*extra):
    return load_config(None, ["data.task=sql", "method=lora", *extra])


def test_stop_at_is_max_steps_when_set_else_epochs():
    assert stop_at_of(_cfg("train.max_steps=6")) == {"max_steps": 6}
    assert stop_at_of(_cfg("train.max_steps=-1", "train.epochs=2.5")) == {"epochs": 2.5}
    assert stop_at_of(_cfg("train.max_steps=1")) == {"max_steps": 1}


def _finished(tmp_path, summary, weights="adapter"):
    (tmp_path / weights).mkdir(parents=True, exist_ok=True)
    (tmp_path / "train_summary.json").write_text(summary if isinstance(summary, str) else json.dumps(summary))
    return RunDir(tmp_path)


def test_a_finished_run_is_recognised_by_its_stopping_point(tmp_path, capsys):
    run = _finished(tmp_path, {"global_step": 6, "stop_at": {"max_steps": 6}})
    assert finished_summary(_cfg("train.max_steps=6"), run, quiet=True)["global_step"] == 6
    assert capsys.readouterr().out == ""
    assert finished_summary(_cfg("train.max_steps=8"), run, quiet=True) is None       # extended: continue
    assert finished_summary(_cfg("train.max_steps=-1", "train.epochs=1"), run, quiet=True) is None
    assert finished_summary(_cfg("train.max_steps=6"), run, quiet=False)["global_step"] == 6
    assert capsys.readouterr().out == (
        f"{tmp_path} already finished training: adapter/ holds step 6 (train_summary.json); nothing to train. "
        "To train longer, raise train.max_steps or train.epochs and --resume again; to start over, use another "
        "output.dir or output.overwrite=true\n")
    run = _finished(tmp_path, {"global_step": 30, "stop_at": {"epochs": 2.0}})
    assert finished_summary(_cfg("train.max_steps=-1", "train.epochs=2"), run, quiet=True) is not None


def test_a_summary_from_before_stop_at_compares_max_steps_only(tmp_path):
    run = _finished(tmp_path, {"global_step": 6})
    assert finished_summary(_cfg("train.max_steps=6"), run, True) is not None
    assert finished_summary(_cfg("train.max_steps=7"), run, True) is None
    run = _finished(tmp_path, {"global_step": 1})
    assert finished_summary(_cfg("train.max_steps=1"), run, True) is not None
    run = _finished(tmp_path, {"global_step": 0})
    assert finished_summary(_cfg("train.max_steps=-1", "train.epochs=1"), run, True) is None


def test_not_finished_without_the_weights_or_a_readable_summary(tmp_path):
    cfg = _cfg("train.max_steps=6")
    done = {"global_step": 6, "stop_at": {"max_steps": 6}}
    assert finished_summary(cfg, _finished(tmp_path / "a", done, weights="model"), True) is None  # lora: adapter/
    full = _cfg("method=full", "train.max_steps=6")
    assert finished_summary(full, _finished(tmp_path / "b", done, weights="model"), True) is not None
    assert finished_summary(full, _finished(tmp_path / "c", done, weights="adapter"), True) is None
    assert finished_summary(cfg, _finished(tmp_path / "d", '{"global_step": 6, "stop', "adapter"), True) is None
    (tmp_path / "e" / "adapter").mkdir(parents=True)
    assert finished_summary(cfg, RunDir(tmp_path / "e"), True) is None


def _complete(root: Path, step: int) -> None:
    ckpt = root / "checkpoints" / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "w.bin").write_bytes(b"x" * step)
    (ckpt / COMPLETE_MARKER).write_text(json.dumps({"files": checkpoint_manifest(ckpt)}))


def test_resume_picks_the_last_complete_checkpoint_at_or_before_max_steps(tmp_path, capsys):
    run = RunDir(tmp_path)
    assert resume_checkpoint(run, 5) is None
    assert capsys.readouterr().out == "no complete checkpoint to resume from: starting from step 0\n"
    for step in (2, 4, 6):
        _complete(tmp_path, step)
    (tmp_path / "checkpoints" / "checkpoint-8").mkdir()  # partial: a kill while it was written
    (tmp_path / "checkpoints" / "checkpoint-7").mkdir()
    assert resume_checkpoint(run, 5).name == "checkpoint-4"
    assert capsys.readouterr().out == ("ignored partial checkpoints: checkpoint-7, checkpoint-8\n"
                                       "resuming from checkpoint-4\n")
    assert not (tmp_path / "checkpoints" / "checkpoint-8").exists()
    assert resume_checkpoint(run, 6).name == "checkpoint-6"
    assert resume_checkpoint(run, 0).name == "checkpoint-6"    # epochs: no step limit
    assert resume_checkpoint(run, -1).name == "checkpoint-6"
    assert capsys.readouterr().out == "resuming from checkpoint-6\n" * 3


def test_resume_at_max_steps_one_and_only_rank_zero_deletes(tmp_path, capsys, monkeypatch):
    from lmtune.train import distributed

    for step in (1, 2):
        _complete(tmp_path, step)
    assert resume_checkpoint(RunDir(tmp_path), 1).name == "checkpoint-1"
    (tmp_path / "checkpoints" / "checkpoint-3").mkdir()
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)  # another rank: never deletes
    assert resume_checkpoint(RunDir(tmp_path), 2).name == "checkpoint-2"
    assert (tmp_path / "checkpoints" / "checkpoint-3").is_dir()
    assert "ignored partial" not in capsys.readouterr().out


def test_resume_refuses_when_every_checkpoint_is_past_max_steps(tmp_path):
    run = RunDir(tmp_path)
    check_resume_steps(run, 3)  # no checkpoints: fine
    _complete(tmp_path, 2)
    check_resume_steps(run, 2)
    with pytest.raises(ConfigError, match="past train.max_steps=1 "):
        check_resume_steps(run, 1)
    import shutil

    shutil.rmtree(tmp_path / "checkpoints")
    for step in (4, 6):
        _complete(tmp_path, step)
    check_resume_steps(run, 4)
    check_resume_steps(run, 0)
    check_resume_steps(run, -1)
    with pytest.raises(ConfigError) as info:
        check_resume_steps(run, 3)
    assert info.value.render() == (
        f"error: --resume: every complete checkpoint is past train.max_steps=3 (the last is "
        f"{tmp_path / 'checkpoints' / 'checkpoint-6'})\n  set train.max_steps to at least the step of a checkpoint "
        f"in {tmp_path / 'checkpoints'}, or start a new run in another output.dir")


# ---------------------------------------------------------------- metrics.jsonl on resume

def _state(step=0, epoch=None, zero=True, max_steps=10):
    return TrainerState(global_step=step, epoch=epoch, is_world_process_zero=zero, max_steps=max_steps)


def test_metrics_on_resume_keep_rows_up_to_the_checkpoint_and_drop_a_cut_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    lines = [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 2.0}, {"note": "no step"}, {"step": 3, "loss": 1.0},
             {"step": 2, "train_runtime": 9.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"step": 4, "lo', encoding="utf-8")
    MetricsJsonl(path).on_train_begin(None, _state(2), TrainerControl())
    assert path.read_text(encoding="utf-8") == "".join(json.dumps(r) + "\n" for r in lines[:3])
    before = path.read_text()
    MetricsJsonl(path).on_train_begin(None, _state(0, zero=False), TrainerControl())  # other ranks never touch it
    assert path.read_text() == before
    path.write_text('{"step": 1}\nnot json\n{"note": "no step"}\n{"step": 1, "loss": 2.0}\n')
    MetricsJsonl(path).on_train_begin(None, _state(0), TrainerControl())  # a bad line is skipped, not the end
    assert path.read_text() == '{"note": "no step"}\n'  # a row without a step counts as step 0
    MetricsJsonl(tmp_path / "none.jsonl").on_train_begin(None, _state(2), TrainerControl())
    assert not (tmp_path / "none.jsonl").exists()


def test_metrics_rows_after_the_checkpoint_and_a_cut_line_are_dropped_on_resume(tmp_path):
    from transformers import TrainerControl, TrainerState

    from lmtune.train.callbacks import MetricsJsonl

    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3, 4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "lo')
    MetricsJsonl(path).on_train_begin(None, TrainerState(global_step=2), TrainerControl())
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
