"""A run whose weights are gone or cut short (adapter/adapter_model.safetensors deleted,
model/model.safetensors truncated): merge, export, serve, eval and generate exit 2 naming the file,
with no traceback and no output folder (lmtune/inference_loading.py checks the weights once, for
all of them, before anything is written). Every case runs the CLI in this process (lmtune.cli.main,
output captured at the file descriptors); one runs `python -m lmtune` for the real process's exit
code and stderr."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmtune.cli import main as cli
from lmtune.errors import UserError
from lmtune.inference_loading import open_path
from tiny_models import save_tiny_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return {"lora": save_tiny_run(tmp_path_factory.mktemp("lora"), "lora"),
            "full": save_tiny_run(tmp_path_factory.mktemp("full"), "full")}


@pytest.fixture(autouse=True)
def _no_server(monkeypatch):
    """In this process a serve that got past the weight check would serve forever (as root, port 8
    binds): it fails the test instead."""
    import lmtune.serve.server

    def refuse(*a, **k):
        raise AssertionError("serve got past the weight check and started a server")

    monkeypatch.setattr(lmtune.serve.server, "make_server", refuse)


def _damaged(runs, tmp_path, how: str) -> tuple[Path, Path]:
    """A copy of a run with one weight file damaged; returns (run, the damaged file)."""
    run = Path(shutil.copytree(runs["lora" if how.startswith("adapter") else "full"], tmp_path / "run"))
    if how == "adapter gone":
        file = run / "adapter" / "adapter_model.safetensors"
        file.unlink()
    elif how == "adapter cut":
        file = run / "adapter" / "adapter_model.safetensors"
    else:
        file = run / "model" / "model.safetensors"
    if how != "adapter gone":
        data = file.read_bytes()
        file.write_bytes(data[: len(data) * 2 // 3])
    return run, file


def _lmtune(*argv, timeout=300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "lmtune", *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def _prompts(run: Path) -> Path:
    path = run / "prompts.jsonl"
    path.write_text('{"prompt": "hello"}\n')
    return path


COMMANDS = {
    "merge": lambda run, out: ["merge", run, "--out", out],
    "export": lambda run, out: ["export", run, "--quant", "f32", "--out", out],
    "generate": lambda run, out: ["generate", run, "--file", _prompts(run), "--max-new-tokens", "2",
                                  "--out", out / "g.jsonl"],
    "eval": lambda run, out: ["eval", run, "--num-samples", "2"],   # writes RUN/eval.json
    "serve": lambda run, out: ["serve", run, "--port", "8"],   # exits before binding (port 8 needs root)
}


# a full run (model/) has no adapter to merge: merge says that, whatever its weights
CASES = [(how, command) for how in ("adapter gone", "adapter cut", "model cut") for command in sorted(COMMANDS)
         if (how, command) != ("model cut", "merge")]


def _check_refused(rc: int, err: str, run: Path, file: Path, how: str, out: Path, tmp_path: Path) -> None:
    assert rc == 2, err
    assert f"error: {file}: {'missing' if how == 'adapter gone' else 'truncated'}" in err, err
    assert "Traceback" not in err
    assert not out.exists() and not (run / "eval.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]   # no scratch, no staging beside --out


@pytest.mark.parametrize("how, command", CASES)
def test_every_command_exits_2_naming_the_damaged_file(runs, tmp_path, command, how, capfd):
    run, file = _damaged(runs, tmp_path, how)
    out = tmp_path / "out"
    capfd.readouterr()
    rc = cli([str(a) for a in COMMANDS[command](run, out)])
    _check_refused(rc, capfd.readouterr().err, run, file, how, out, tmp_path)


def test_the_real_process_exits_2_without_a_traceback(runs, tmp_path):
    run, file = _damaged(runs, tmp_path, "adapter cut")
    out = tmp_path / "out"
    res = _lmtune(*COMMANDS["generate"](run, out))
    _check_refused(res.returncode, res.stderr, run, file, "adapter cut", out, tmp_path)


def test_serving_several_runs_checks_each(runs, tmp_path, capfd):
    good = runs["lora"]
    bad, _ = _damaged(runs, tmp_path, "adapter gone")
    bad = bad.rename(tmp_path / "bad")   # served names are directory names: they must differ
    file = bad / "adapter" / "adapter_model.safetensors"
    capfd.readouterr()
    rc = cli(["serve", str(good), str(bad), "--port", "8"])
    err = capfd.readouterr().err
    assert rc == 2 and f"error: {file}: missing" in err, err


def test_the_truncation_message_gives_both_sizes(runs, tmp_path):
    whole = (runs["lora"] / "adapter" / "adapter_model.safetensors").stat().st_size
    run, file = _damaged(runs, tmp_path, "adapter cut")
    with pytest.raises(UserError) as err:
        open_path(str(run))
    assert f"{file}: truncated ({file.stat().st_size:,} bytes, the header says {whole:,})" in str(err.value)


def test_a_sharded_model_missing_a_shard_is_named(runs, tmp_path):
    import json

    run = Path(shutil.copytree(runs["full"], tmp_path / "run"))
    model = run / "model"
    (model / "model.safetensors").rename(model / "model-00001-of-00002.safetensors")
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    with pytest.raises(UserError, match=r"model-00002-of-00002.safetensors: missing \(1 of 2 weight shards\)"):
        open_path(str(run))
