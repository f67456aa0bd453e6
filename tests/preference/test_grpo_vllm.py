"""rl.use_vllm: refused with one exit-2 message before any model loads where vLLM cannot run
(no vllm package, or no CUDA); where it can, its settings reach TRL's GRPOConfig."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import lmtune.models
from cli_runs import run_cli
from lmtune.config import load_config
from lmtune.train.grpo import grpo_config
from tiny_models import save_tiny_model, write_alpaca

VLLM_RUNS_HERE = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


@pytest.mark.skipif(VLLM_RUNS_HERE, reason="vllm and CUDA are both here: nothing to refuse")
def test_use_vllm_without_vllm_or_cuda_stops_before_the_model_loads(tmp_path, capsys, monkeypatch):
    def loading(*args, **kwargs):
        raise AssertionError("the model loaded before rl.use_vllm was refused")

    monkeypatch.setattr(lmtune.models, "load_model", loading)
    base = save_tiny_model(tmp_path / "base", "llama")
    code, out, err = run_cli(capsys, "train", f"model.name_or_path={base}",
                             f"data.train={write_alpaca(tmp_path / 'd.jsonl', 8)}", f"output.dir={tmp_path / 'run'}",
                             "train.objective=grpo", "rl.use_vllm=true", "rl.vllm_mode=server")
    assert code == 2
    assert "rl.use_vllm" in err and "rl.use_vllm=false" in err and "Traceback" not in err
    assert ("vllm package is not installed" in err) == (importlib.util.find_spec("vllm") is None)
    assert ("no CUDA GPU" in err) == (not torch.cuda.is_available())
    assert not (tmp_path / "run").exists()


def _args(tmp_path, *overrides):
    cfg = load_config(None, ["data.task=sql", "train.objective=grpo", "rl.num_generations=4", *overrides])
    return grpo_config(cfg, dict(output_dir=str(tmp_path), use_cpu=True, report_to=[],
                                 per_device_train_batch_size=4))


def test_vllm_settings_reach_grpo_config(tmp_path):
    server = _args(tmp_path, "rl.use_vllm=true", "rl.vllm_mode=server",
                   "rl.vllm_server_base_url=http://127.0.0.1:8123")
    assert (server.use_vllm, server.vllm_mode, server.vllm_server_base_url) == (True, "server",
                                                                                "http://127.0.0.1:8123")
    colocate = _args(tmp_path, "rl.use_vllm=true", "rl.vllm_gpu_memory_utilization=0.55")
    assert (colocate.use_vllm, colocate.vllm_mode, colocate.vllm_gpu_memory_utilization) == (True, "colocate", 0.55)
    off = _args(tmp_path, "rl.vllm_mode=server")   # the mode alone does not turn vLLM on
    assert off.use_vllm is False
