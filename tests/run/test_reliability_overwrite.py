"""Overwrite only what lmtune wrote: output.overwrite (train) and --overwrite (merge) replace a
directory only when it carries lmtune's marker (run/layout.py OUTPUT_MARKER) and holds none of the
command's inputs (config, data, model, the current directory). Every refusal exits 2, names the
path, and leaves the user's files byte for byte as they were."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from lmtune.cli import main
from lmtune.run.layout import OUTPUT_MARKER, is_lmtune_output
from tiny_models import save_tiny_model, write_alpaca


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("overwrite") / "base", "llama")


def _config(path: Path, model: Path, data: Path, out: Path) -> Path:
    cfg = {"model": {"name_or_path": str(model)},
           "data": {"train": [str(data)], "val_split": 0.0, "max_length": 64, "template": "alpaca"},
           "train": {"max_steps": 1, "batch_size": 2, "grad_accum": 1, "threads": 1, "load_best": False},
           "eval": {"after_train": False, "forgetting_check": False},
           "output": {"dir": str(out), "report": False}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def _project(tmp: Path, base: Path) -> tuple[Path, Path]:
    """A user's project folder: their config, data and notes."""
    project = tmp / "project"
    project.mkdir()
    data = write_alpaca(project / "train.jsonl", 8)
    (project / "notes.md").write_text("three weeks of notes\n")
    return project, data


def _refused(argv, capsys, *needles: str) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error: ") == 1
    for n in needles:
        assert n in err, err
    return err


def test_output_dir_is_the_users_project_folder(tmp_path, base, capsys):
    project, data = _project(tmp_path, base)
    cfg = _config(project / "cfg.yaml", base, data, project)
    before = _tree(project)
    _refused(["train", str(cfg), "output.overwrite=true"], capsys, f"output.dir: {project} holds",
             "choose another output.dir")
    assert _tree(project) == before


def test_output_dir_with_unrelated_files_and_no_marker(tmp_path, base, capsys):
    project, data = _project(tmp_path, base)
    other = tmp_path / "photos"
    other.mkdir()
    (other / "holiday.jpg").write_bytes(b"\xff\xd8 not a run")
    cfg = _config(project / "cfg.yaml", base, data, other)
    before = _tree(tmp_path)
    _refused(["train", str(cfg), "output.overwrite=true"], capsys, f"output.dir: {other} was not written by lmtune",
             OUTPUT_MARKER)
    assert _tree(tmp_path) == before


def _fake_run(path: Path, *extra: str) -> Path:
    """A directory as lmtune left it (its marker) plus the user's files `extra`."""
    path.mkdir(parents=True)
    (path / OUTPUT_MARKER).write_text(json.dumps({"written_by": "lmtune", "kind": "run"}))
    (path / "config.yaml").write_text("{}\n")
    for name in extra:
        (path / name).write_text("user's\n")
    return path


@pytest.mark.parametrize("inside", ["config", "data", "model"])
def test_an_lmtune_run_holding_an_input_is_not_replaced(inside, tmp_path, base, capsys):
    run = _fake_run(tmp_path / "run")
    data = write_alpaca((run if inside == "data" else tmp_path) / "train.jsonl", 8)
    model = base
    if inside == "model":
        import shutil

        model = Path(shutil.copytree(base, run / "base"))
    cfg = _config((run if inside == "config" else tmp_path) / "cfg.yaml", model, data, run)
    held = {"config": cfg, "data": data, "model": model}[inside]
    before = _tree(tmp_path)
    _refused(["train", str(cfg), "output.overwrite=true"], capsys, f"output.dir: {run} holds {held}",
             "an input of this command")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("where", [".", ".."])
def test_output_dir_is_or_holds_the_current_directory(where, tmp_path, base, capsys, monkeypatch):
    run = _fake_run(tmp_path / "run")
    (run / "work").mkdir()
    data = write_alpaca(tmp_path / "train.jsonl", 8)
    cfg = _config(tmp_path / "cfg.yaml", base, data, Path(where))
    monkeypatch.chdir(run if where == "." else run / "work")
    before = _tree(tmp_path)
    _refused(["train", str(cfg), "output.overwrite=true"], capsys, "holds the current directory")
    assert _tree(tmp_path) == before


def test_a_real_lmtune_run_is_replaced_and_the_new_one_is_marked(tmp_path, base, capsys):
    project, data = _project(tmp_path, base)
    run = tmp_path / "runs" / "a"
    cfg = _config(project / "cfg.yaml", base, data, run)
    assert main(["train", str(cfg)]) == 0
    assert is_lmtune_output(run)
    (run / "stale.txt").write_text("from the first run")
    before = _tree(project)
    assert main(["train", str(cfg), "output.overwrite=true"]) == 0
    assert not (run / "stale.txt").exists() and (run / "adapter" / "adapter_config.json").is_file()
    assert is_lmtune_output(run)
    assert _tree(project) == before


# ---------------------------------------------------------------- merge --out, eval --out

@pytest.fixture(scope="module")
def trained(tmp_path_factory, base) -> Path:
    root = tmp_path_factory.mktemp("overwrite-run")
    data = write_alpaca(root / "train.jsonl", 8)
    run = root / "run"
    assert main(["train", str(_config(root / "cfg.yaml", base, data, run))]) == 0
    return run


def test_merge_overwrite_keeps_a_users_directory(trained, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("do not delete")
    before = _tree(tmp_path)
    _refused(["merge", str(trained), "--out", str(mine), "--overwrite"], capsys,
             f"--out: {mine} was not written by lmtune")
    assert _tree(tmp_path) == before


def test_merge_out_current_directory_and_symlink_are_refused(trained, tmp_path, capsys, monkeypatch):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    _refused(["merge", str(trained), "--out", "."], capsys, "--out . is the current directory")
    _refused(["merge", str(trained), "--out", "link", "--overwrite"], capsys, "--out link is a symlink")
    assert _tree(tmp_path) == before


def test_merge_replaces_its_own_output(trained, tmp_path, capsys):
    out = tmp_path / "merged"
    assert main(["merge", str(trained), "--out", str(out)]) == 0
    assert is_lmtune_output(out) and (out / "model.safetensors").is_file()
    (out / "extra.txt").write_text("lmtune's directory, so this goes")
    assert main(["merge", str(trained), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "extra.txt").exists() and is_lmtune_output(out)


def test_eval_out_refuses_a_users_directory(tmp_path, capsys):
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "eval.json").write_text('{"mine": true}')
    before = _tree(tmp_path)
    _refused(["eval", "tiny", "--task", "sql", "--out", str(mine)], capsys,
             f"--out: {mine} was not written by lmtune")
    assert _tree(tmp_path) == before


def test_a_run_stopped_before_writing_anything_can_start_again(tmp_path):
    """Ctrl-C between creating the run directory and the first file leaves only the marker: the
    same command must start again without output.overwrite; one more file and it is a run."""
    from lmtune.errors import ConfigError
    from lmtune.run.layout import RunDir

    run = RunDir(tmp_path / "run")
    run.create(overwrite=False)
    assert [p.name for p in run.root.iterdir()] == [OUTPUT_MARKER]
    run.check_writable(overwrite=False, resume=False)
    (run.root / "config.yaml").write_text("{}\n")
    with pytest.raises(ConfigError, match="is not empty"):
        run.check_writable(overwrite=False, resume=False)
