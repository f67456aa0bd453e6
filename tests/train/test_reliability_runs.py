"""Reliability of real runs: a checkpoint torn while rotated, NaN/inf stops, disk space for merge, adapters on the wrong base, and paths that must stay inside the run. Tiny models, real training
(TRL/peft underneath), real merges; the only stand-in is the free-space number of shutil.disk_usage
in the disk test. kill -9 and resume: test_resume.py."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from lmtune.cli import main
from lmtune.run.layout import COMPLETE_MARKER, RunDir, checkpoint_is_complete
from tiny_models import save_tiny_model, write_alpaca

ROOT = Path(__file__).resolve().parents[2]


def _config(root: Path, model: Path, data: Path, out: Path, **train) -> Path:
    cfg = {"model": {"name_or_path": str(model)},
           "data": {"train": [str(data)], "val_split": 0.0, "max_length": 96, "template": "alpaca"},
           "train": {"max_steps": 4, "batch_size": 2, "grad_accum": 1, "learning_rate": 5e-3, "warmup_ratio": 0,
                     "logging_steps": 1, "save_steps": 2, "save_total_limit": 5, "load_best": False,
                     "threads": 1, **train},
           "eval": {"after_train": False, "forgetting_check": False},
           "output": {"dir": str(out), "report": False}}
    path = root / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


Trained = namedtuple("Trained", "root base data run config")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trained:
    """A finished 4-step LoRA run (checkpoints at 2 and 4) on a tiny Llama."""
    root = tmp_path_factory.mktemp("runs")
    base = save_tiny_model(root / "base", "llama")
    data = write_alpaca(root / "train.jsonl", 24)
    run = root / "run"
    cfg = _config(root, base, data, run)
    assert main(["train", str(cfg)]) == 0
    return Trained(root, base, data, run, cfg)


def _snapshot(*roots: Path) -> dict[str, str]:
    out = {}
    for root in roots:
        for p in [root, *root.rglob("*")] if root.exists() else []:
            out[str(p)] = ("dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()) if not p.is_symlink() \
                else f"link -> {os.readlink(p)}"
    return out


# ---------------------------------------------------------------- a checkpoint torn on resume

def test_resume_ignores_a_checkpoint_torn_while_being_rotated(trained, tmp_path):
    """The Trainer deletes old checkpoints file by file before the new one is marked complete: a
    kill then leaves a directory that still has its marker but lost its weights."""
    resumed = tmp_path / "resumed"
    shutil.copytree(trained.run, resumed)
    shutil.rmtree(resumed / "adapter")
    (resumed / "train_summary.json").unlink()
    torn = resumed / "checkpoints" / "checkpoint-4"
    (torn / "adapter_model.safetensors").unlink()
    assert (torn / COMPLETE_MARKER).is_file() and not checkpoint_is_complete(torn)
    assert RunDir(resumed).last_checkpoint().name == "checkpoint-2"
    cfg = _config(tmp_path, trained.base, trained.data, resumed)
    assert main(["train", str(cfg), "--resume"]) == 0
    a = load_file(str(trained.run / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(resumed / "adapter" / "adapter_model.safetensors"))
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert checkpoint_is_complete(torn)  # written again, whole, by the resumed run
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)  # rows after checkpoint-2 were dropped, then logged again once


# ---------------------------------------------------------------- NaN / inf

def _nan_run(tmp_path, trained, logging_steps: int, capsys):
    out = tmp_path / "nan"
    cfg = _config(tmp_path, trained.base, trained.data, out, learning_rate=1e6, max_steps=6, save_steps=1,
                  logging_steps=logging_steps)
    capsys.readouterr()
    rc = main(["train", str(cfg)])
    return rc, capsys.readouterr().err, out


def _assert_stopped_with_good_checkpoint(err: str, out: Path) -> int:
    assert "Traceback" not in err
    message = err[err.index("error: "):]
    step = int(message.split("training stopped at step ", 1)[1].split(":", 1)[0])
    assert "learning rate too high (lower train.learning_rate)" in message and "fp16 overflow" in message
    run = RunDir(out)
    last = run.last_checkpoint()
    assert last is not None and f"last good checkpoint: {last}" in message
    assert int(last.name.split("-")[1]) < step
    weights = load_file(str(last / "adapter_model.safetensors"))
    assert all(torch.isfinite(w).all() for w in weights.values())
    assert not (out / "adapter").exists() and not (out / "train_summary.json").exists()
    # no checkpoint of the failing step (or later) is marked complete
    assert all(int(p.name.split("-")[1]) < step for p in run.complete_checkpoints())
    return step


def test_huge_learning_rate_stops_at_the_first_non_finite_log(trained, tmp_path, capsys):
    rc, err, out = _nan_run(tmp_path, trained, logging_steps=1, capsys=capsys)
    assert rc == 2
    step = _assert_stopped_with_good_checkpoint(err, out)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    bad = next(r for r in rows if not all(math.isfinite(r.get(k, 0.0)) for k in ("loss", "grad_norm")))
    assert bad["step"] == step
    # the log guard stopped it (the save-time weight check would name a weight), the run went no
    # further, and nothing was saved at or after that step, not even an unmarked checkpoint
    assert f"training stopped at step {step}: loss became" in err or \
        f"training stopped at step {step}: grad_norm became" in err
    assert max(r["step"] for r in rows) == step
    assert all(int(p.name.split("-")[1]) < step for p in (out / "checkpoints").glob("checkpoint-*"))


def test_non_finite_weights_are_never_marked_even_between_logs(trained, tmp_path, capsys):
    """Logging every 50 steps sees nothing in time; the save-time check of the weights must stop the
    run and leave the diverged checkpoint unmarked (so --resume can never pick it)."""
    rc, err, out = _nan_run(tmp_path, trained, logging_steps=50, capsys=capsys)
    assert rc == 2
    assert "became nan" in err and "weight " in err
    step = _assert_stopped_with_good_checkpoint(err, out)
    assert not checkpoint_is_complete(out / "checkpoints" / f"checkpoint-{step}")


# ---------------------------------------------------------------- merge: disk space

def _fake_disk(monkeypatch, free: int) -> None:
    real = shutil.disk_usage

    def disk_usage(path):
        u = real(path)
        return type(u)(u.total, u.used, free)

    monkeypatch.setattr(shutil, "disk_usage", disk_usage)


def test_merge_refuses_when_the_disk_is_too_small_and_writes_nothing(trained, tmp_path, monkeypatch, capsys):
    _fake_disk(monkeypatch, free=10 * 2**20)
    before = _snapshot(trained.run, tmp_path)
    capsys.readouterr()
    rc = main(["merge", str(trained.run), "--out", str(tmp_path / "deep" / "merged")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert f"not enough disk space for the merged model under {tmp_path}: 0.01 GiB free" in err
    assert "free some space or pass --out on another disk" in err
    assert _snapshot(trained.run, tmp_path) == before  # no out dir, no staging dir, run untouched


def test_merge_with_enough_space_is_real_and_whole(trained, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    _fake_disk(monkeypatch, free=2**40)
    out = tmp_path / "merged"
    assert main(["merge", str(trained.run), "--out", str(out)]) == 0
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # the staging dir was renamed away


# ---------------------------------------------------------------- merge/generate: bad inputs

def _other_base(root: Path, arch: str, hidden: int | None = None) -> Path:
    path = root / f"other-{arch}-{hidden}"
    if path.exists():
        return path
    if hidden is None:
        return save_tiny_model(path, arch)
    import tiny_models

    original = tiny_models.model_config

    def wider(a, vocab):
        cfg = original(a, vocab)
        cfg.hidden_size, cfg.head_dim = hidden, hidden // cfg.num_attention_heads
        return cfg

    tiny_models.model_config = wider
    try:
        return save_tiny_model(path, arch)
    finally:
        tiny_models.model_config = original


def _run_on_other_base(t: Trained, tmp: Path, base: Path) -> Path:
    """The trained run, copied, with its config naming another base model."""
    run = tmp / "run-copy"
    shutil.copytree(t.run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["name_or_path"] = str(base)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return run


def _adapter_on_other_base(t: Trained, tmp: Path, base: Path) -> Path:
    adapter = tmp / "adapter-copy"
    shutil.copytree(t.run / "adapter", adapter)
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = str(base)
    (adapter / "adapter_config.json").write_text(json.dumps(cfg))
    return adapter


def merge_wider_base(t, tmp):
    run = _run_on_other_base(t, tmp, _other_base(t.root, "llama", 64))
    return (["merge", str(run), "--out", str(tmp / "m")],
            "this adapter was trained on a different base model: model.layers.0.mlp.down_proj expects a weight "
            "of [32, 64], the base", f"records its base as '{t.base}'")


def merge_other_architecture(t, tmp):
    run = _run_on_other_base(t, tmp, _other_base(t.root, "gpt2"))
    return (["merge", str(run), "--out", str(tmp / "m")], "is not a module of the base",
            "use that base, or retrain the adapter on this one")


def merge_adapter_dir_other_base(t, tmp):
    adapter = _adapter_on_other_base(t, tmp, _other_base(t.root, "llama", 64))
    return (["merge", str(adapter), "--out", str(tmp / "m")], f"{adapter}: this adapter was trained on a different base",
            "(adapter_config.json base_model_name_or_path)")


def merge_pickle_adapter(t, tmp):
    run = tmp / "pickled-run"
    shutil.copytree(t.run, run, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    weights = run / "adapter" / "adapter_model.safetensors"
    torch.save(load_file(str(weights)), run / "adapter" / "adapter_model.bin")
    weights.unlink()
    return (["merge", str(run), "--out", str(tmp / "m")], "the adapter has only pickle weights (adapter_model.bin)",
            "or set model.allow_pickle=true")


def merge_nan_adapter(t, tmp):
    run = tmp / "nan-run"
    shutil.copytree(t.run, run, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    weights = run / "adapter" / "adapter_model.safetensors"
    tensors = load_file(str(weights))
    tensors[next(k for k in sorted(tensors) if "lora_B" in k)][0, 0] = float("nan")
    save_file(tensors, str(weights))
    return (["merge", str(run), "--out", str(tmp / "m")], "gives NaN or inf weights",
            "retrain with a lower learning rate")


def merge_missing_run(t, tmp):
    return (["merge", str(tmp / "nope"), "--out", str(tmp / "m")], f"{tmp / 'nope'}: no such run or adapter directory",
            "give the run directory")


def merge_full_run_has_no_adapter(t, tmp):
    run = tmp / "full-run"
    shutil.copytree(t.run, run, ignore=shutil.ignore_patterns("checkpoints", "tensorboard"))
    (run / "adapter").rename(run / "model")
    return (["merge", str(run), "--out", str(tmp / "m")], "has no adapter to merge", "use the run's model/ directory")


def merge_out_is_a_file(t, tmp):
    (tmp / "m").write_text("x")
    return (["merge", str(t.run), "--out", str(tmp / "m")], f"--out {tmp / 'm'} exists and is not a directory",
            "choose a directory path")


def merge_out_not_empty(t, tmp):
    (tmp / "m").mkdir()
    (tmp / "m" / "keep.txt").write_text("x")
    return ["merge", str(t.run), "--out", str(tmp / "m")], f"--out {tmp / 'm'} is not empty", "pass --overwrite"


def merge_out_is_the_run(t, tmp):
    return (["merge", str(t.run), "--out", str(t.run), "--overwrite"], f"--out {t.run} would replace {t.run}",
            "write the merged model elsewhere")


def merge_out_is_the_adapter(t, tmp):
    return (["merge", str(t.run), "--out", str(t.run / "adapter"), "--overwrite"], "which the merge reads",
            "write the merged model elsewhere")


def merge_out_contains_the_run(t, tmp):
    return (["merge", str(t.run), "--out", str(t.root), "--overwrite"], f"--out {t.root} would replace {t.run}",
            "write the merged model elsewhere")


MERGE_CASES = {f.__name__.replace("_", "-"): f for f in (
    merge_wider_base, merge_other_architecture, merge_adapter_dir_other_base, merge_pickle_adapter,
    merge_nan_adapter, merge_missing_run,
    merge_full_run_has_no_adapter, merge_out_is_a_file, merge_out_not_empty, merge_out_is_the_run,
    merge_out_is_the_adapter, merge_out_contains_the_run)}


@pytest.mark.parametrize("name", list(MERGE_CASES))
def test_merge_bad_input_exits_2_and_writes_nothing(name, trained, tmp_path, capsys):
    argv, where, fix = MERGE_CASES[name](trained, tmp_path)
    before = _snapshot(trained.root, tmp_path)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    message = err[err.index("error: "):]
    assert where in message and fix in message, message
    assert _snapshot(trained.root, tmp_path) == before


def test_generate_refuses_an_adapter_of_another_base(trained, tmp_path, capsys):
    run = _run_on_other_base(trained, tmp_path, _other_base(trained.root, "llama", 64))
    rc = main(["generate", str(run), "--prompt", "Customers in Oslo?", "--max-new-tokens", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "trained on a different base model" in err and "Traceback" not in err


# ---------------------------------------------------------------- paths stay inside the run

def test_run_paths_cannot_leave_the_run_directory(tmp_path):
    run = RunDir(tmp_path / "run")
    for name in ("../escape", "/etc/passwd", "checkpoints/../../x"):
        with pytest.raises(ValueError, match="outside the run directory"):
            run / name
    assert run / "checkpoints/checkpoint-2" == tmp_path / "run" / "checkpoints" / "checkpoint-2"


def test_docs_table_lists_every_merge_case():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    assert [n for n in MERGE_CASES if f"`{n}`" not in doc] == []
