"""`distributed.nproc: auto` and `train.rows_per_step` (lmtune/train/processes.py): the main preset
resolves per machine, with faked GPU and core counts, and keeps 8 rows per optimizer step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmtune.train import distributed
from lmtune.train import processes as process_count
from lmtune.config import load_config
from lmtune.errors import ConfigError

PRESET = Path(__file__).resolve().parents[2] / "configs" / "tiny-sql-lora.yaml"


def _resolve(monkeypatch, gpus: int, cores: int, *overrides: str):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(process_count, "usable_cores", lambda: cores)
    cfg = load_config(PRESET, list(overrides))
    process_count.resolve(cfg)
    t = cfg.train
    return cfg.distributed.nproc, t.grad_accum, t.micro_batch("cuda" if gpus else "cpu") * t.grad_accum


@pytest.mark.parametrize("gpus, cores, nproc, accum", [
    (0, 2, 2, 4),     # this machine: two single-threaded workers (benchmarks/README.md)
    (0, 1, 1, 8),     # one core: one process
    (0, 3, 2, 4),     # three cores: 8 rows split over 2 (3 does not divide 8)
    (0, 16, 8, 1),    # many cores: at most one row per worker and step
    (1, 16, 1, 8),    # one GPU: one process, whatever the cores
    (2, 16, 2, 4),    # one process per GPU
    (4, 2, 4, 2),
    (3, 2, 2, 4),     # 3 GPUs cannot split 8 rows evenly: 2 of them
])
def test_the_main_preset_keeps_8_rows_per_step_on_any_machine(monkeypatch, gpus, cores, nproc, accum):
    got = _resolve(monkeypatch, gpus, cores)
    assert got[:2] == (nproc, accum)
    assert got[0] * got[2] == 8            # rows per optimizer step over all processes


def test_auto_on_cpu_keeps_one_process_for_wide_models_and_honours_threads(monkeypatch, tmp_path):
    wide = tmp_path / "wide"
    wide.mkdir()
    (wide / "config.json").write_text('{"model_type": "llama", "hidden_size": 1024}')
    assert _resolve(monkeypatch, 0, 16, f"model.name_or_path={wide}")[:2] == (1, 8)
    assert _resolve(monkeypatch, 0, 16, "train.threads=4")[:2] == (4, 2)   # 16 cores / 4 threads
    assert _resolve(monkeypatch, 0, 16, "distributed.nproc=1")[:2] == (1, 8)  # a number stays


def test_rows_per_step_that_do_not_divide_fail_with_the_key(monkeypatch):
    with pytest.raises(ConfigError) as exc:
        _resolve(monkeypatch, 0, 2, "distributed.nproc=3")
    assert "train.rows_per_step: 8 is not a multiple of train.batch_size x processes (1 x 3)" in exc.value.render()
    # without rows_per_step grad_accum is taken as given
    assert _resolve(monkeypatch, 0, 2, "train.rows_per_step=null", "train.grad_accum=3")[:2] == (2, 3)


def test_nproc_accepts_auto_or_a_number_only():
    assert load_config(None, ["data.task=sql", "distributed.nproc=auto"]).distributed.nproc == "auto"
    for value, problem in (("many", "distributed.nproc: got 'many', expected a number >= 1 or auto"),
                           ("0", "distributed.nproc: got 0, must be >= 1")):
        with pytest.raises(ConfigError) as exc:
            load_config(None, ["data.task=sql", f"distributed.nproc={value}"])
        assert problem in exc.value.render()


def test_the_python_api_runs_auto_in_one_process():
    cfg = load_config(PRESET, [])
    distributed.start(cfg, "cpu")               # not under a launcher
    assert (cfg.distributed.nproc, cfg.train.grad_accum) == (1, 8)
