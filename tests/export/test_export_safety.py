"""`lmtune export` never deletes or rewrites what it did not write: its scratch merge is a marked
folder beside --out, --out inside a run (the run itself, its adapter/ or model/) is refused, a
refusal leaves no folder, an unsupported family is refused before any merge, and a rerun after a
kill -9 removes exactly what the killed export left, saying so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lmtune.cli import main as cli
from lmtune.run.layout import OUTPUT_MARKER
from tiny_models import save_tiny_run

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = ["Modelfile", "chat_template.jinja", "model-f32.gguf"]


def _tree(path: Path) -> dict[str, bytes | None]:
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("lora"), "lora")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    return save_tiny_run(tmp_path_factory.mktemp("full"), "full")


def test_the_scratch_merge_is_outside_out_and_a_users_lookalike_folder_survives(lora_run, tmp_path):
    out = tmp_path / "out"
    mine = out / ".lmtune-export.merge"   # the scratch name export used inside --out before
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("mine")
    assert cli(["export", str(lora_run), "--quant", "f32", "--out", str(out), "--overwrite"]) == 0
    assert (mine / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, ".lmtune-export.merge"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]   # the scratch beside --out is gone


@pytest.mark.parametrize("where", ["run", "run/adapter", "run/adapter/sub", "run/model", "run/model/gguf"])
def test_out_inside_what_export_reads_is_refused_and_nothing_changes(lora_run, full_run, where, capsys):
    run = full_run if "model" in where else lora_run
    out = run.parent / where
    before = _tree(run)
    assert cli(["export", str(run), "--quant", "f32", "--out", str(out), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "which export reads" in err, err
    assert _tree(run) == before


def test_an_unsupported_family_is_refused_before_any_merge_or_folder(tmp_path, monkeypatch, capsys):
    import lmtune.merge

    run = save_tiny_run(tmp_path / "gpt2", "lora", arch="gpt2")
    merges = []
    real = lmtune.merge.merge
    monkeypatch.setattr(lmtune.merge, "merge", lambda *a, **k: merges.append(a) or real(*a, **k))
    out = tmp_path / "new" / "deeper" / "out"
    assert cli(["export", str(run), "--out", str(out)]) == 2
    assert "model type 'gpt2' is not supported" in capsys.readouterr().err
    assert merges == [] and not (tmp_path / "new").exists()
    assert not list(tmp_path.glob(".lmtune-export-merge-*"))


def test_a_failure_after_the_checks_removes_only_the_folders_export_made(tmp_path, capsys):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tiny_models import build_tokenizer

    odd = tmp_path / "odd"   # rows of 40: q8_0 needs multiples of 32, found while writing
    LlamaForCausalLM(LlamaConfig(vocab_size=320, hidden_size=40, intermediate_size=72, num_hidden_layers=1,
                                 num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=64)).save_pretrained(str(odd))
    build_tokenizer().save_pretrained(str(odd))
    (tmp_path / "keep").mkdir()
    out = tmp_path / "keep" / "a" / "b"
    assert cli(["export", str(odd), "--quant", "q8_0", "--out", str(out)]) == 2
    assert "not a multiple of 32" in capsys.readouterr().err
    assert (tmp_path / "keep").is_dir() and not (tmp_path / "keep" / "a").exists()


# A process killed with SIGKILL in the middle of an export's merge: it made the scratch folder as
# export does (lmtune.export.scratch.make_scratch, marked before anything is merged into it) and had
# begun writing the merged weights. Light imports: the kill lands within a second, never racing a merge.
KILLED_MID_MERGE = """
import os, signal, sys
from pathlib import Path
from lmtune.export.scratch import make_scratch
scratch = make_scratch(Path(sys.argv[1]))
(scratch / "merged").mkdir()
(scratch / "merged" / "model.safetensors").write_bytes(bytes(1000))
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_the_scratch_is_marked_with_its_out_and_pid_before_the_merge_writes(lora_run, tmp_path, monkeypatch):
    import lmtune.merge

    out = tmp_path / "out"
    seen = []
    real = lmtune.merge.merge

    def merge(run, merged, *a, **k):   # what a kill during the merge would leave beside --out
        seen.append(json.loads((Path(merged).parent / OUTPUT_MARKER).read_text()))
        return real(run, merged, *a, **k)

    monkeypatch.setattr(lmtune.merge, "merge", merge)
    assert cli(["export", str(lora_run), "--quant", "f32", "--out", str(out)]) == 0
    assert [(m["kind"], m["out"], m["pid"]) for m in seen] == [("export-scratch", str(out), os.getpid())]


def test_a_rerun_after_kill_9_removes_only_what_the_killed_export_left(lora_run, tmp_path, capfd):
    out = tmp_path / "out"
    decoy = tmp_path / ".lmtune-export-merge-mine"   # a user's folder with export's prefix, no marker
    decoy.mkdir()
    (decoy / "notes.txt").write_text("mine")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", KILLED_MID_MERGE, str(out)], env=env, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    scratch = [p for p in tmp_path.glob(".lmtune-export-merge-*") if (p / OUTPUT_MARKER).is_file()]
    assert len(scratch) == 1
    marker = json.loads((scratch[0] / OUTPUT_MARKER).read_text())
    # what a kill during the writing leaves in --out, beside a user's hidden files
    out.mkdir()
    ours = [out / ".model-q8_0.gguf.tmp", out / ".Modelfile.k3j4h5g6.tmp"]
    theirs = [out / ".model-q8_0.gguf.tmp.bak", out / ".notes.tmp"]
    for p in ours + theirs:
        p.write_text("x")
    capfd.readouterr()
    assert cli(["export", str(lora_run), "--quant", "f32", "--out", str(out), "--overwrite"]) == 0
    stdout = capfd.readouterr().out
    note = [line for line in stdout.splitlines() if "removed what an interrupted export left" in line]
    assert len(note) == 1 and str(scratch[0]) in note[0] and all(str(p) in note[0] for p in ours), stdout
    assert not scratch[0].exists() and not any(p.exists() for p in ours)
    assert all(p.read_text() == "x" for p in theirs) and (decoy / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, *(p.name for p in theirs)])
    # a scratch of a live export (this process) is not touched
    live = tmp_path / ".lmtune-export-merge-live"
    live.mkdir()
    (live / OUTPUT_MARKER).write_text(json.dumps({**marker, "pid": os.getpid()}))
    assert cli(["export", str(lora_run), "--quant", "f32", "--out", str(out), "--overwrite"]) == 0
    assert live.is_dir()
