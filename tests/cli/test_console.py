"""The console: library warnings filtered in one place (lmtune/console.py) unless --verbose/--debug,
one progress bar with loss, learning rate and tokens/s instead of the Trainer's printed dicts, one
line on dropped examples, and Ctrl-C naming the step, the exact resume command and its checkpoint."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from lmtune.cli import main
from tiny_models import save_tiny_model, write_alpaca

ROOT = Path(__file__).resolve().parents[2]

# The three kinds of noise the issue names, raised through the libraries' real loggers.
NOISE = """
import logging, sys, warnings
from lmtune.console import configure
configure(verbose=sys.argv[1] == "verbose")
from transformers.utils import logging as hf_logging
warnings.warn("`foo` is deprecated", FutureWarning)
logging.getLogger("bitsandbytes.backends.cpu.ops").warning(
    "Failed to load CPU gemm_4bit_forward from kernels-community: x. Please make sure you already `pip install kernels`")
hf_logging.get_logger("transformers.tokenization_utils_base").warning(
    "Token indices sequence length is longer than the specified maximum sequence length for this model")
print("done")
"""


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_library_noise_is_hidden_unless_verbose(mode):
    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "PYTHONWARNINGS")}
    env["PYTHONPATH"] = str(ROOT / "src")
    proc = subprocess.run([sys.executable, "-c", NOISE, mode], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "done", proc.stderr
    shown = [n for n in ("FutureWarning", "gemm_4bit_forward", "Token indices") if n in proc.stderr]
    assert shown == ([] if mode == "quiet" else ["FutureWarning", "gemm_4bit_forward", "Token indices"]), proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("console")
    save_tiny_model(root / "base", "llama")
    data = write_alpaca(root / "train.jsonl", 20)
    rows = data.read_text().splitlines(keepends=True)
    data.write_text("".join(rows + rows[:4]))   # 4 duplicates
    return root


def _config(root: Path, out: str, **train) -> Path:
    cfg = {"model": {"name_or_path": str(root / "base")},
           "data": {"train": [str(root / "train.jsonl")], "val_split": 0.0, "test_size": 0, "max_length": 40,
                    "template": "alpaca"},
           "train": {"max_steps": 4, "batch_size": 2, "grad_accum": 1, "threads": 1, "logging_steps": 1,
                     "load_best": False, **train},
           "eval": {"after_train": False, "forgetting_check": False},
           "output": {"dir": str(root / out), "report": False}}
    path = root / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def test_one_bar_with_loss_lr_tokens_per_second_and_one_data_line(project, capsys):
    assert main(["train", str(_config(project, "bar"))]) == 0
    out, err = capsys.readouterr()
    assert "{'loss'" not in out + err and "'learning_rate'" not in out + err   # no raw dicts
    last = err.replace("\r", "\n").split("train:")[-1]
    assert "4/4" in last and "loss=" in last and "lr=" in last and "tok/s=" in last, last
    data_lines = [line for line in err.splitlines() if line.startswith("data: ")]
    assert data_lines == ["data: 24 training records -> 20 training examples (4 duplicates dropped; "
                          "20 truncated at data.max_length 40)"], err
    rows = [json.loads(line) for line in (project / "bar" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]   # metrics.jsonl as before


def test_ctrl_c_names_the_step_the_command_and_the_checkpoint(project, capsys):
    cfg = _config(project, "stopped", max_steps=400, save_steps=3, save_total_limit=2)
    metrics = project / "stopped" / "metrics.jsonl"

    def logged_step() -> int:
        # the trainer may be mid-write: a last line without its newline is not read yet
        text = metrics.read_text() if metrics.is_file() else ""
        return max((json.loads(r).get("step", 0) for r in text.split("\n")[:-1] if r.strip()), default=0)

    seen: list = []   # what the watcher did, for the failure message

    def interrupt_after_step_4():   # a real SIGINT, as Ctrl-C sends, once step 4 is logged
        deadline = time.time() + 600   # generous: a loaded machine may take minutes to set up
        try:
            while time.time() < deadline:
                if logged_step() >= 4:
                    seen.append(("SIGINT at step", logged_step(), signal.getsignal(signal.SIGINT)))
                    os.kill(os.getpid(), signal.SIGINT)
                    return
                time.sleep(0.01)
            seen.append("deadline passed")
        except Exception as exc:   # noqa: BLE001 - reported by the assertion below
            seen.append(repr(exc))

    # Python's own Ctrl-C handler, as in a terminal: a suite started in the background by a
    # non-interactive shell inherits SIGINT ignored (the failure that `seen` first showed)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    watcher = threading.Thread(target=interrupt_after_step_4, daemon=True)
    watcher.start()
    try:
        assert main(["train", str(cfg), "train.learning_rate=1e-3"]) == 130, seen
    finally:
        signal.signal(signal.SIGINT, previous)
    watcher.join()
    err = capsys.readouterr().err
    lines = err[err.index("stopped at step"):].splitlines()
    step = int(lines[0].split()[3])
    assert step >= 4 and lines[0].endswith("of 400; resume with:"), lines
    command = lines[1].strip()
    assert command == f"lmtune train {cfg} train.learning_rate=1e-3 --resume"
    ckpt = project / "stopped" / "checkpoints" / f"checkpoint-{3 * (step // 3)}"
    assert lines[2] == f"it continues from {ckpt} (step {3 * (step // 3)})"
    # the printed command (less the program name) continues from that checkpoint; a shorter
    # max_steps (not something the checkpoints depend on) keeps the test short
    k = 3 * (step // 3)
    assert main(shlex.split(command)[1:] + [f"train.max_steps={k + 2}"]) == 0
    assert f"resuming from checkpoint-{k}" in capsys.readouterr().out


def test_ctrl_c_before_training_says_nothing_to_resume(project, capsys, monkeypatch):
    import lmtune.train.recipe as train_module

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_setup", interrupted)
    assert main(["train", str(_config(project, "never"))]) == 130
    assert "stopped before training began; nothing to resume" in capsys.readouterr().err
