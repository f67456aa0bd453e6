"""CPU tuning (lmtune/train/cpu_tuning.py): nothing on import, everything once at the CLI entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from lmtune.train.cpu_tuning import model_hidden_size, worker_threads
from lmtune.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CLEAN = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")}


def _child(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], env=CLEAN, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_importing_lmtune_changes_nothing_in_the_process():
    code = ("import os, sys, lmtune, lmtune.train.recipe, lmtune.models, lmtune.cli, lmtune.train.distributed; "
            "print(os.environ.get('OMP_WAIT_POLICY'), os.environ.get('OMP_NUM_THREADS'), 'torch' in sys.modules)")
    assert _child(code) == "None None False"


def test_the_cli_tunes_a_command_that_runs_a_model_before_torch_loads():
    # the same path `lmtune eval tiny --task sql` takes in lmtune/cli.py main
    code = ("import os, sys; from lmtune.cli import build_parser; from lmtune.train.cpu_tuning import apply; "
            "args = build_parser().parse_args(['eval', 'tiny', '--task', 'sql']); "
            "t = args._tuning(args); loaded = 'torch' in sys.modules; a = apply(t); import torch; "
            "print(loaded, os.environ['OMP_WAIT_POLICY'], a.threads, torch.get_num_threads(), a.keep_freed_memory)")
    assert _child(code) == "False PASSIVE 1 1 False"     # evaluation: the allocator is left alone
    code = ("from lmtune.cli import build_parser; "
            f"args = build_parser().parse_args(['train', {str(ROOT / 'configs' / 'tiny-sql-lora.yaml')!r}, "
            "'distributed.nproc=1', 'train.omp_wait_policy=active']); t = args._tuning(args); "
            "print(t.training, t.cfg.train.omp_wait_policy)")
    assert _child(code) == "True active"
    assert _child("from lmtune.cli import build_parser; "
                  "print(build_parser().parse_args(['config', 'show'])._tuning)") == "None"


def test_hidden_size_is_read_from_config_json(tmp_path):
    from lmtune.models import resolve_model_path

    assert model_hidden_size(resolve_model_path("tiny")) == 256
    for name, config in (("llama", {"hidden_size": 512}), ("gpt2", {"n_embd": 768}),
                         ("vlm", {"text_config": {"hidden_size": 2048}, "vision_config": {"hidden_size": 64}})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(config))
    assert [model_hidden_size(str(tmp_path / n)) for n in ("llama", "gpt2", "vlm")] == [512, 768, 2048]
    assert model_hidden_size("no-such-org/no-such-model") is None     # not in the Hub cache, offline


def test_torchrun_workers_share_the_cores():
    cfg = load_config(None, ["data.task=sql"])
    assert worker_threads(cfg, nproc=2, cores=2) == 1
    assert worker_threads(cfg, nproc=2, cores=16) == 8
    assert worker_threads(cfg, nproc=4, cores=2) == 1
    assert worker_threads(load_config(None, ["data.task=sql", "train.threads=3"]), 2, 16) == 3
