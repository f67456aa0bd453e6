"""Two-process DDP (gloo) LoRA on CPU, started the way users start it (`lmtune train --nproc 2`,
and `accelerate launch -m lmtune train` for the resume):

  - both ranks end with bit-identical trainable tensors, equal to rank 0's saved adapter;
  - 2 processes x batch 1 follow the loss curve of 1 process x batch 2 (same global batch, same
    gradient accumulation) within a relative 1e-4 per logged step (measured: ~2e-7);
  - only rank 0 writes the run directory, and the data is tokenized by one rank;
  - resuming a 2-process run from its middle checkpoint ends where the uninterrupted run ended.
  - a bad data line stops `--nproc 2` in the launcher, before any rank starts (one message, exit 2).

The tiny model and data keep the two launches to seconds of training; most of the time is imports.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lmtune.config import load_config
from lmtune.train.distributed import DATA_CACHE, PRESETS
from lmtune.train.recipe import train
import early_launch
from cli_runs import lmtune_process
from tiny_models import save_tiny_model, write_alpaca

STEPS = 4
LOSS_RTOL = 1e-4  # per logged step, 2 processes vs 1 (float summation order only)


def _config(root: Path, model_dir: Path, data: Path) -> Path:
    cfg = {"model": {"name_or_path": str(model_dir)},
           "data": {"train": [str(data)], "val_split": 0.2, "max_length": 96, "template": "alpaca"},
           # dropout 0: the 1- and 2-process runs would otherwise draw different random masks
           "lora": {"dropout": 0.0},
           "train": {"max_steps": STEPS, "batch_size": 1, "grad_accum": 2, "learning_rate": 5e-3,
                     "logging_steps": 1, "save_steps": 2, "save_total_limit": 5, "load_best": False,
                     "warmup_ratio": 0.0},
           "eval": {"after_train": False},
           "output": {"dir": str(root / "ddp"), "report": False}}
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


def _inputs(root: Path) -> tuple[Path, Path]:
    return root, _config(root, save_tiny_model(root / "base", "llama"), write_alpaca(root / "train.jsonl", 40))


def _launch(inputs: tuple[Path, Path]) -> SimpleNamespace:
    """Both launches, in order (tests/helpers/early_launch.py runs this while other tests run):
    `lmtune train --nproc 2` with each rank dumping its tensors at the end (tests/helpers/rank_dump.py),
    then `accelerate launch` resuming a copy of that run cut after its step-2 checkpoint."""
    root, config = inputs
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parents[1] / "helpers" / "rank_dump.py"), str(root / "dump"),
                             "train", str(config), "--nproc", "2"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out, _ = proc.communicate(timeout=600)
    first = SimpleNamespace(root=root, config=config, ddp=root / "ddp", dump=root / "dump", log=out,
                            launcher=proc.pid, returncode=proc.returncode, resumed=root / "resumed", resume=None)
    if proc.returncode == 0:
        first.resume = _resume(first.ddp, first.resumed)
    return first


def _resume(ddp: Path, resumed: Path) -> subprocess.CompletedProcess:
    shutil.copytree(ddp, resumed)
    # the run "died" after the step-2 checkpoint: later checkpoints and the adapter never got written
    shutil.rmtree(resumed / "checkpoints" / f"checkpoint-{STEPS}")
    shutil.rmtree(resumed / "adapter")
    with socket.socket() as s:  # accelerate's static rendezvous needs a port; pick a free one
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(PRESETS / "accelerate" / "ddp.yaml"), "--num_processes", "2",
           "--main_process_port", str(port),
           "-m", "lmtune", "train", str(resumed / "config.yaml"), f"output.dir={resumed}", "--resume"]
    return subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)


early_launch.register("ddp", __file__, "runs", _inputs, _launch)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    # the reference: one process, the same global batch (1 x 2 instead of 2 x 1), on its own inputs
    # (the launch's may not be written yet)
    root, config = _inputs(tmp_path_factory.mktemp("single"))
    single = train(load_config(config, ["train.batch_size=2", f"output.dir={root / 'single'}"]), quiet=True)
    launched = early_launch.result("ddp")
    assert launched.returncode == 0, launched.log[-4000:]
    launched.single = single.run_dir
    return launched


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _adapter(run: Path) -> dict:
    return load_file(str(run / "adapter" / "adapter_model.safetensors"))


def test_ranks_end_with_identical_parameters(runs):
    r0 = load_file(str(runs.dump / "rank0.safetensors"))
    r1 = load_file(str(runs.dump / "rank1.safetensors"))
    assert r0 and set(r0) == set(r1)
    for name in r0:
        assert torch.equal(r0[name], r1[name]), name
    assert all(r0[k].abs().sum() > 0 for k in r0 if "lora_B" in k)  # trained: lora_B starts at zero
    saved = _adapter(runs.ddp)  # what rank 0 wrote equals what the ranks hold
    assert len(saved) == len(r0)
    for name, tensor in saved.items():
        assert torch.equal(tensor, r0[name.replace(".weight", ".default.weight")]), name


def test_loss_curve_matches_one_process_with_the_same_global_batch(runs):
    ddp = [r for r in _rows(runs.ddp) if "loss" in r]
    one = [r for r in _rows(runs.single) if "loss" in r]
    assert [r["step"] for r in ddp] == [r["step"] for r in one] == list(range(1, STEPS + 1))
    for a, b in zip(ddp, one):
        assert a["loss"] == pytest.approx(b["loss"], rel=LOSS_RTOL), a["step"]
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=LOSS_RTOL), a["step"]
    assert ddp[-1]["loss"] < ddp[0]["loss"]
    x, y = _adapter(runs.ddp), _adapter(runs.single)
    for name in x:
        torch.testing.assert_close(x[name], y[name], atol=1e-5, rtol=0)


def test_only_rank_zero_writes_and_data_is_prepared_once(runs):
    ranks = [json.loads((runs.dump / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["built_data"] for r in ranks] == [True, False]  # rank 1 read rank 0's cache
    # one metrics.jsonl, one row per logged step (a second writer would duplicate rows)
    steps = [r["step"] for r in _rows(runs.ddp) if "loss" in r]
    assert steps == list(range(1, STEPS + 1))
    # one TensorBoard stream: every event file was written by rank 0's process
    events = list((runs.ddp / "tensorboard").glob("events.out.tfevents.*"))
    assert events and {p.name.split(".")[-2] for p in events} == {str(ranks[0]["pid"])}
    leftovers = [p.name for p in runs.ddp.iterdir() if p.name.startswith(".")]
    assert leftovers == [], leftovers  # no data cache, no staging directories
    assert not (runs.ddp / DATA_CACHE).exists()
    saved = yaml.safe_load((runs.ddp / "config.yaml").read_text())["distributed"]
    assert (saved["backend"], saved["nproc"], saved["nnodes"]) == ("ddp", 2, 1)
    ckpt = runs.ddp / "checkpoints" / "checkpoint-2"
    assert {"rng_state_0.pth", "rng_state_1.pth", "lmtune_complete"} <= {p.name for p in ckpt.iterdir()}
    # process.json names the launcher (written by rank 0, ended by the launcher), not a worker
    record = json.loads((runs.ddp / "process.json").read_text())
    assert (record["pid"], record["state"], record["exit_code"]) == (runs.launcher, "finished", 0)
    assert record["command"][-2:] == ["--nproc", "2"]


def test_resume_under_ddp_via_accelerate_launch(runs):
    done, resumed = runs.resume, runs.resumed
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "resuming from checkpoint-2" in done.stdout
    a, b = _adapter(runs.ddp), _adapter(resumed)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0)
    steps = [r["step"] for r in _rows(resumed) if "loss" in r]
    assert sorted(steps) == list(range(1, STEPS + 1))  # rank 0 only, and no step logged twice


def test_bad_data_stops_the_launch_before_any_rank_starts_with_one_message_and_exit_2(tmp_path):
    model_dir = save_tiny_model(tmp_path / "base", "llama")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": 3\n')
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"name_or_path": str(model_dir)}, "data": {"train": [str(bad)]},
                                   "output": {"dir": str(tmp_path / "run"), "report": False}}))
    done, loaded = lmtune_process("train", cfg, "--nproc", "2", env=_env(), timeout=600)
    assert done.returncode == 2, (done.stdout + done.stderr)[-4000:]
    assert done.stderr.count("bad.jsonl:2: malformed JSON") == 1
    assert "launching" not in done.stdout and "[rank" not in done.stderr  # no worker was started
    assert loaded == []   # a refusal costs a second, not the 3 s of importing peft and transformers' trainer
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run").exists()  # nothing was created
