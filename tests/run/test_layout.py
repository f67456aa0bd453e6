"""lmtune/run/layout.py function by function on real files: the checkpoint marker and its file list,
atomic writes, the output marker, what may be replaced or written, the run's paths and partial
checkpoints. Pure filesystem, no model."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmtune import __version__
from lmtune.errors import ConfigError
from lmtune.run.layout import (COMPLETE_MARKER, OUTPUT_MARKER, RunDir, check_new_output_dir, check_replaceable,
                               checkpoint_is_complete, checkpoint_manifest, is_lmtune_output, probe_writable,
                               replace_dir, run_inputs, write_json, write_output_marker, write_text)


def _ckpt(root: Path, step: int, complete: bool = True) -> Path:
    ckpt = root / "checkpoints" / f"checkpoint-{step}"
    (ckpt / "sub").mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"w" * (10 + step))
    (ckpt / "sub" / "state.json").write_text("{}")
    if complete:
        (ckpt / COMPLETE_MARKER).write_text(json.dumps({"files": checkpoint_manifest(ckpt)}))
    return ckpt


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args, **kwargs)
    return info.value.render()


# ---------------------------------------------------------------- checkpoint marker

def test_manifest_lists_every_file_but_the_marker_with_its_size(tmp_path):
    ckpt = _ckpt(tmp_path, 3)
    assert checkpoint_manifest(ckpt) == {"model.safetensors": 13, "sub/state.json": 2}


def test_a_checkpoint_is_complete_only_with_its_marker_and_every_listed_file(tmp_path):
    ckpt = _ckpt(tmp_path, 1)
    assert checkpoint_is_complete(ckpt) is True
    (ckpt / "model.safetensors").write_bytes(b"short")  # rotated away half-way: size differs
    assert checkpoint_is_complete(ckpt) is False
    (ckpt / "model.safetensors").unlink()
    assert checkpoint_is_complete(ckpt) is False
    assert checkpoint_is_complete(_ckpt(tmp_path, 2, complete=False)) is False


@pytest.mark.parametrize("marker, expected", [
    ("not json", False), ("[1, 2]", False), ("{}", True), ('{"files": {}}', True),
    ('{"files": {"gone.bin": 1}}', False),
])
def test_checkpoint_marker_contents(tmp_path, marker, expected):
    ckpt = tmp_path / "checkpoint-1"
    ckpt.mkdir()
    (ckpt / COMPLETE_MARKER).write_text(marker)
    assert checkpoint_is_complete(ckpt) is expected


def test_a_marker_that_is_a_directory_is_not_complete(tmp_path):
    (tmp_path / COMPLETE_MARKER).mkdir()
    assert checkpoint_is_complete(tmp_path) is False


# ---------------------------------------------------------------- atomic writes

def test_write_text_creates_parents_writes_utf8_with_ordinary_permissions(tmp_path):
    path = tmp_path / "a" / "b" / "notes.txt"
    write_text(path, "naïve ✓\n")
    assert path.read_bytes() == "naïve ✓\n".encode("utf-8")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in path.parent.iterdir()] == ["notes.txt"]  # no temporary file left


def test_write_text_replaces_and_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "f.txt"
    write_text(path, "one")
    write_text(path, "two")
    assert path.read_text() == "two"
    with pytest.raises(TypeError):
        write_text(path, b"bytes are not text")  # fails inside the write
    assert path.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_write_text_temporary_is_hidden_beside_the_file_where_cleanup_finds_it(tmp_path, monkeypatch):
    """The temporary is .NAME.*.tmp in the target's directory: the rename is atomic there, and it
    is what remove_partial_checkpoints deletes after a kill."""
    seen = []
    real = os.replace

    def replace(src, dst):
        seen.append((Path(src), sorted(tmp_path.glob(".*.tmp"))))
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_text(tmp_path / "metrics.jsonl", "x")
    [(src, found)] = seen
    assert src.parent == tmp_path and src.name.startswith(".metrics.jsonl.") and src.name.endswith(".tmp")
    assert found == [src]


def test_an_interrupt_right_after_the_rename_propagates_as_itself(tmp_path, monkeypatch):
    real = os.replace

    def replace_then_interrupt(src, dst):
        real(src, dst)
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", replace_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_text(tmp_path / "f.txt", "done")
    assert (tmp_path / "f.txt").read_text() == "done"


def test_write_json_is_indented_in_order_with_paths_as_text(tmp_path):
    write_json(tmp_path / "x.json", {"b": Path("/p"), "a": [1]})
    assert (tmp_path / "x.json").read_text() == '{\n  "b": "/p",\n  "a": [\n    1\n  ]\n}\n'


def test_replace_dir_swaps_whole_and_leaves_no_old_copy(tmp_path):
    final, staging = tmp_path / "out", tmp_path / ".out.staging"
    final.mkdir()
    (final / "old.txt").write_text("old")
    (tmp_path / ".out.old").mkdir()  # left by a kill during an earlier swap
    (tmp_path / ".out.old" / "stale").write_text("x")
    staging.mkdir()
    (staging / "new.txt").write_text("new")
    replace_dir(staging, final)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    staging.mkdir()
    replace_dir(staging, tmp_path / "fresh")  # nothing to replace
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "out"]


def test_output_marker_round_trip(tmp_path):
    write_output_marker(tmp_path, "merged")
    assert json.loads((tmp_path / OUTPUT_MARKER).read_text()) == {
        "written_by": "lmtune", "kind": "merged", "version": __version__}
    assert is_lmtune_output(tmp_path) is True


@pytest.mark.parametrize("content", [None, "not json", "[]", '{"written_by": "someone"}'])
def test_is_lmtune_output_false_for_anything_else(tmp_path, content):
    if content is not None:
        (tmp_path / OUTPUT_MARKER).write_text(content)
    assert is_lmtune_output(tmp_path) is False


# ---------------------------------------------------------------- what may be replaced

def _marked(path: Path, *files: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    write_output_marker(path, "run")
    for f in files:
        (path / f).write_text("x")
    return path


def test_check_replaceable_accepts_lmtune_output_and_an_empty_directory(tmp_path):
    check_replaceable(_marked(tmp_path / "run", "a.txt"), [tmp_path / "elsewhere"], "output.dir", "fix")
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", [], "output.dir", "fix")


def test_check_replaceable_refuses_a_users_directory(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("x")
    msg = _error(check_replaceable, tmp_path / "mine", [], "--out", "choose another")
    assert msg == (f"error: --out: {tmp_path / 'mine'} was not written by lmtune (no {OUTPUT_MARKER} marker), "
                   "so lmtune will not delete what it holds\n  choose another")


def test_check_replaceable_refuses_a_directory_holding_or_being_an_input(tmp_path, monkeypatch):
    run = _marked(tmp_path / "run", "data.jsonl")
    msg = _error(check_replaceable, run, [run / "data.jsonl"], "output.dir", "move it")
    assert msg == (f"error: output.dir: {run} holds {run / 'data.jsonl'}, an input of this command; replacing "
                   "the directory would delete it\n  move it")
    assert f"holds {run}, an input" in _error(check_replaceable, run, [run], "output.dir", "f")
    monkeypatch.chdir(run)
    assert "holds the current directory, an input" in _error(check_replaceable, run, [Path.cwd()], "output.dir", "f")
    # the current directory given as a path that is not Path.cwd() itself is named as given
    assert "holds ., an input" in _error(check_replaceable, run, [Path(".")], "output.dir", "f")
    (run / "sub").mkdir()
    assert f"holds {run / 'sub'}, an input" in _error(check_replaceable, run, [run / "sub"], "output.dir", "f")


def test_check_replaceable_refuses_a_symlink(tmp_path):
    real = _marked(tmp_path / "real")
    (tmp_path / "link").symlink_to(real)
    msg = _error(check_replaceable, tmp_path / "link", [], "--out", "f")
    assert msg == (f"error: --out: {tmp_path / 'link'} is a symlink; lmtune will not delete through it\n"
                   f"  give the real path ({real}) or another directory")


def test_run_inputs_lists_the_config_data_local_model_and_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = SimpleNamespace(train=["t.jsonl"], validation=["v.jsonl"], test=["x.jsonl"])
    cfg = SimpleNamespace(source="c.yaml", data=data, model=SimpleNamespace(name_or_path=str(tmp_path)))
    assert run_inputs(cfg) == [tmp_path, Path("c.yaml"), Path("t.jsonl"), Path("v.jsonl"), Path("x.jsonl"), tmp_path]
    cfg = SimpleNamespace(data=data, model=SimpleNamespace(name_or_path="org/hub-model"))  # no source, hub id
    assert run_inputs(cfg) == [tmp_path, Path("t.jsonl"), Path("v.jsonl"), Path("x.jsonl")]
    monkeypatch.setenv("HOME", str(tmp_path))
    cfg = SimpleNamespace(source=None, data=data, model=SimpleNamespace(name_or_path="~"))
    assert run_inputs(cfg)[-1] == tmp_path  # ~ expanded


def test_probe_writable_creates_nothing_and_names_the_failure(tmp_path):
    probe_writable(tmp_path, "--out")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    msg = _error(probe_writable, tmp_path / "file", "--out")
    assert msg == f"error: --out: cannot write under {tmp_path / 'file'} (Not a directory)\n  choose a directory you can write to"


# ---------------------------------------------------------------- check_new_output_dir

def _new_out(out, overwrite=False, inputs=()):
    return check_new_output_dir(out, "--out", overwrite, list(inputs), "pass --overwrite")


def test_new_output_dir_accepts_new_empty_and_nested_paths_and_creates_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _new_out(tmp_path / "a" / "b" / "c")
    (tmp_path / "empty").mkdir()
    _new_out(tmp_path / "empty")
    _new_out(Path("rel"))
    _new_out(_marked(tmp_path / "mine", "x"), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "mine"]


def test_new_output_dir_refusals(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert _error(_new_out, tmp_path / "link") == (
        f"error: --out {tmp_path / 'link'} is a symlink; lmtune writes only to real directories\n"
        f"  give the real path ({tmp_path / 'real'}) or a new directory")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert "is a symlink" in _error(_new_out, tmp_path / "dangling")
    (tmp_path / "f").write_text("x")
    assert _error(_new_out, tmp_path / "f") == (f"error: --out {tmp_path / 'f'} exists and is not a directory\n"
                                                "  choose a directory path for --out")
    cwd_msg = ("is the current directory (or holds it); lmtune writes a new directory and replaces it whole\n"
               "  name a new directory, e.g. --out merged")
    assert _error(_new_out, Path(".")) == f"error: --out . {cwd_msg}"
    assert _error(_new_out, tmp_path.parent) == f"error: --out {tmp_path.parent} {cwd_msg}"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "k").write_text("x")
    assert _error(_new_out, tmp_path / "full") == f"error: --out {tmp_path / 'full'} is not empty\n  pass --overwrite"
    assert _error(_new_out, tmp_path / "full", overwrite=True) == (
        f"error: --out: {tmp_path / 'full'} was not written by lmtune (no {OUTPUT_MARKER} marker), so lmtune will "
        "not delete what it holds\n  choose another directory")
    mine = _marked(tmp_path / "mine", "data.jsonl")
    assert "choose another directory" in _error(_new_out, mine, True, [mine / "data.jsonl"])
    assert _error(_new_out, tmp_path / "f" / "m") == (
        f"error: --out {tmp_path / 'f'} is not a directory, so {tmp_path / 'f' / 'm'} cannot be created under it\n"
        "  choose a path whose parents are directories")
    assert "is not a directory, so" in _error(_new_out, tmp_path / "f" / "deeper" / "m")


def test_new_output_dir_under_a_dangling_symlink_is_not_created_through_it(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert "is not a directory, so" in _error(_new_out, tmp_path / "dangling" / "m")


def _unwritable(monkeypatch, directory: Path) -> None:
    """mkdtemp refused in `directory` only (root writes through file modes, so modes cannot show it)."""
    import errno
    import tempfile

    real = tempfile.mkdtemp

    def mkdtemp(*args, **kwargs):
        if Path(kwargs.get("dir") or "") == directory:
            raise PermissionError(errno.EACCES, "Permission denied")
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "mkdtemp", mkdtemp)


def test_new_output_dir_probes_the_nearest_existing_parent(tmp_path, monkeypatch):
    _unwritable(monkeypatch, tmp_path)
    assert _error(_new_out, tmp_path / "a" / "b") == (
        f"error: --out: cannot write under {tmp_path} (Permission denied)\n  choose a directory you can write to")
    (tmp_path / "ok").mkdir()
    _new_out(tmp_path / "ok" / "sub")  # another parent: fine


# ---------------------------------------------------------------- RunDir

def test_run_paths_stay_inside_the_run(tmp_path):
    run = RunDir(tmp_path / "run")
    assert run / "eval.json" == tmp_path / "run" / "eval.json"
    assert run / "a/b.txt" == tmp_path / "run" / "a" / "b.txt"
    assert run.checkpoints == tmp_path / "run" / "checkpoints"
    for bad in ("/etc/passwd", "../x", "a/../../x"):
        with pytest.raises(ValueError, match="would be written outside the run directory"):
            run / bad
    assert RunDir("~/runs/x").root == Path.home() / "runs" / "x"


def test_staging_path_is_hidden_and_cleared(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / ".adapter.staging" / "d").mkdir(parents=True)
    assert run.staging("adapter") == tmp_path / ".adapter.staging"
    assert not (tmp_path / ".adapter.staging").exists()
    assert run.staging("model") == tmp_path / ".model.staging"


def _writable(root, overwrite=False, resume=False, inputs=()):
    return RunDir(root).check_writable(overwrite, resume, list(inputs))


def test_check_writable_accepts_new_empty_marked_and_overwritable_runs(tmp_path):
    _writable(tmp_path / "new" / "deeper")
    (tmp_path / "empty").mkdir()
    _writable(tmp_path / "empty")
    _writable(_marked(tmp_path / "only-marker"))  # a run stopped before writing anything
    _writable(_marked(tmp_path / "old-run", "metrics.jsonl"), overwrite=True)
    _writable(_marked(tmp_path / "old-run"), resume=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "old-run", "only-marker"]


def test_check_writable_probes_where_the_run_will_be_written(tmp_path, monkeypatch):
    run = _marked(tmp_path / "run")
    _unwritable(monkeypatch, run)
    msg = f"error: output.dir: cannot write under {run} (Permission denied)\n  choose a directory you can write to"
    assert _error(_writable, run, resume=True) == msg
    _writable(tmp_path / "other")  # its parent, tmp_path, is writable
    assert _error(_writable, run / "sub" / "new") == msg  # the nearest existing parent is probed


def test_an_empty_output_dir_that_is_an_input_needs_no_overwrite(tmp_path):
    """Nothing is deleted without output.overwrite, so an empty directory may be the current one."""
    (tmp_path / "empty").mkdir()
    _writable(tmp_path / "empty", inputs=[tmp_path / "empty"])


def test_check_writable_refusals(tmp_path):
    (tmp_path / "f").write_text("x")
    assert _error(_writable, tmp_path / "f") == (f"error: output.dir: {tmp_path / 'f'} exists and is not a directory\n"
                                                 "  choose a directory path for output.dir")
    assert _error(_writable, tmp_path / "gone", resume=True) == (
        f"error: --resume: run directory {tmp_path / 'gone'} does not exist\n"
        "  start a run first, or point output.dir at the run to resume")
    run = _marked(tmp_path / "run", "metrics.jsonl")
    assert _error(_writable, run) == (
        f"error: output.dir: {run} is not empty\n"
        "  choose another output.dir, pass --resume to continue it, or set output.overwrite=true")
    (tmp_path / "link").symlink_to(run)
    assert _error(_writable, tmp_path / "link", overwrite=True) == (
        f"error: output.dir: {tmp_path / 'link'} is a symlink; output.overwrite will not delete through it\n"
        f"  give the real path ({run}) or another output.dir")
    assert _error(_writable, run, overwrite=True, inputs=[run / "metrics.jsonl"]) == (
        f"error: output.dir: {run} holds {run / 'metrics.jsonl'}, an input of this command; replacing the "
        "directory would delete it\n  choose another output.dir (a new directory), or move your files out of it")
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "notes").write_text("x")
    assert "was not written by lmtune" in _error(_writable, tmp_path / "users", overwrite=True)
    assert _error(_writable, tmp_path / "f" / "run") == (
        f"error: output.dir: {tmp_path / 'f'} is not a directory, so {tmp_path / 'f' / 'run'} cannot be created "
        "under it\n  choose a path whose parents are directories")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert "is not a directory, so" in _error(_writable, tmp_path / "dangling" / "run")
    assert _error(_writable, tmp_path / "f" / "a" / "run").startswith(f"error: output.dir: {tmp_path / 'f'} is not")


def test_resume_checks_containment_and_writability(tmp_path):
    run = _marked(tmp_path / "run")
    (tmp_path / "outside").mkdir()
    (run / "adapter").symlink_to(tmp_path / "outside")
    assert _error(_writable, run, resume=True) == (
        f"error: output.dir: {run / 'adapter'} is a symlink to {tmp_path / 'outside'}, outside the run directory; "
        f"lmtune writes only inside the run\n  replace the link by a real directory or file (rm {run / 'adapter'})")


def test_check_contained_checks_the_run_root_when_checkpoints_exist_too(tmp_path):
    root = _marked(tmp_path / "run")
    (root / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "eval").symlink_to(tmp_path / "outside")
    assert f"{root / 'eval'} is a symlink to" in _error(RunDir(root).check_contained)


def test_check_contained_looks_into_checkpoints_and_accepts_links_inside(tmp_path):
    root = _marked(tmp_path / "run")
    (root / "checkpoints").mkdir()
    (root / "target").mkdir()
    (root / "inside").symlink_to(root / "target")
    (root / "checkpoints" / "checkpoint-1").symlink_to(root / "target")
    RunDir(root).check_contained()
    (tmp_path / "else").mkdir()
    (root / "checkpoints" / "checkpoint-2").symlink_to(tmp_path / "else")
    assert "checkpoint-2 is a symlink to" in _error(RunDir(root).check_contained)
    # checkpoints/ itself linked outside: the link is refused, never walked
    (root / "checkpoints" / "checkpoint-2").unlink()
    (root / "checkpoints").rename(tmp_path / "ck")
    (root / "checkpoints").symlink_to(tmp_path / "ck")
    assert f"{root / 'checkpoints'} is a symlink to {tmp_path / 'ck'}" in _error(RunDir(root).check_contained)


def test_create_marks_a_new_run_and_clears_an_old_one(tmp_path):
    run = RunDir(tmp_path / "a" / "run")
    run.create(overwrite=False)
    assert [p.name for p in run.root.iterdir()] == [OUTPUT_MARKER]
    assert json.loads((run.root / OUTPUT_MARKER).read_text())["kind"] == "run"
    (run.root / "metrics.jsonl").write_text("x")
    run.create(overwrite=False)  # resume: keeps what is there
    assert (run.root / "metrics.jsonl").exists()
    run.create(overwrite=True)
    assert [p.name for p in run.root.iterdir()] == [OUTPUT_MARKER]
    (tmp_path / "f").write_text("x")
    assert _error(RunDir(tmp_path / "f" / "run").create, False) == (
        f"error: output.dir: cannot create {tmp_path / 'f' / 'run'} (Not a directory)\n"
        "  choose a directory you can write to")


def test_complete_checkpoints_are_sorted_by_step_and_partial_ones_ignored(tmp_path):
    run = RunDir(tmp_path)
    assert run.complete_checkpoints() == [] and run.last_checkpoint() is None
    for step in (10, 9, 100):
        _ckpt(tmp_path, step)
    _ckpt(tmp_path, 200, complete=False)
    (tmp_path / "checkpoints" / "checkpoint-best").mkdir()
    (tmp_path / "checkpoints" / "checkpoint-best" / COMPLETE_MARKER).write_text("{}")
    assert [p.name for p in run.complete_checkpoints()] == ["checkpoint-9", "checkpoint-10", "checkpoint-100"]
    assert run.last_checkpoint().name == "checkpoint-100"
    assert run.last_checkpoint(max_step=99).name == "checkpoint-10"
    assert run.last_checkpoint(max_step=10).name == "checkpoint-10"
    assert run.last_checkpoint(max_step=8) is None


def test_the_step_is_the_number_after_the_last_dash(tmp_path):
    _ckpt(tmp_path, 3)
    renamed = tmp_path / "checkpoints" / "checkpoint-old-12"
    _ckpt(tmp_path, 12).rename(renamed)
    assert [p.name for p in RunDir(tmp_path).complete_checkpoints()] == ["checkpoint-3", "checkpoint-old-12"]


def test_remove_partial_checkpoints_and_temporaries(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / ".metrics.jsonl.abc.tmp").write_text("half")
    (tmp_path / "keep.tmp").write_text("not ours")
    assert run.remove_partial_checkpoints() == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.tmp"]
    _ckpt(tmp_path, 5)
    for step in (30, 4, 1):
        _ckpt(tmp_path, step, complete=False)
    (tmp_path / "checkpoints" / "checkpoint-x").mkdir()
    (tmp_path / "checkpoints" / "checkpoint-7").write_text("a file, not a checkpoint")
    assert run.remove_partial_checkpoints() == ["checkpoint-x", "checkpoint-1", "checkpoint-4", "checkpoint-30"]
    assert sorted(p.name for p in run.checkpoints.iterdir()) == ["checkpoint-5", "checkpoint-7"]
