"""The run directory (layout: docs/architecture.md) and atomic writes: every file is written
under a temporary name in the same directory and renamed into place, so a killed run never leaves a half-written
file that looks complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lmtune import __version__
from lmtune.errors import ConfigError

COMPLETE_MARKER = "lmtune_complete"  # written last into a checkpoint; its absence means "partial"
# Written into every directory lmtune creates (a run, a merged model, an eval --out): only a directory
# carrying it may be replaced by output.overwrite / --overwrite. Anything else is the user's.
OUTPUT_MARKER = "lmtune_output.json"


def checkpoint_manifest(ckpt: Path) -> dict[str, int]:
    """Relative path -> size of every file in a checkpoint (the marker lists them)."""
    return {str(f.relative_to(ckpt)): f.stat().st_size for f in sorted(ckpt.rglob("*"))
            if f.is_file() and f.name != COMPLETE_MARKER}


def checkpoint_is_complete(ckpt: Path) -> bool:
    """The marker exists and every file it lists is still there with its size. The Trainer deletes
    old checkpoints (save_total_limit) file by file, so a kill during that leaves a directory whose
    marker survives while its weights are gone: the file list catches it."""
    marker = ckpt / COMPLETE_MARKER
    if not marker.is_file():
        return False
    try:
        files = json.loads(marker.read_text(encoding="utf-8")).get("files")
    except (ValueError, AttributeError):
        return False
    if files is None:  # a marker from before the file list: trust it
        return True
    return all((ckpt / name).is_file() and (ckpt / name).stat().st_size == size for name, size in files.items())


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; artifacts are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def replace_dir(staging: Path, final: Path) -> None:
    """Move a fully written staging directory into place (old version removed only afterwards)."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    if old.exists():
        shutil.rmtree(old)


def write_output_marker(directory: Path, kind: str) -> None:
    write_json(directory / OUTPUT_MARKER, {"written_by": "lmtune", "kind": kind, "version": __version__})


def is_lmtune_output(directory: Path) -> bool:
    try:
        return json.loads((directory / OUTPUT_MARKER).read_text(encoding="utf-8")).get("written_by") == "lmtune"
    except (OSError, ValueError, AttributeError):
        return False


def check_replaceable(directory: Path, inputs: list[Path], label: str, fix: str) -> None:
    """Refuse to delete `directory` unless lmtune wrote it (its marker) and it holds none of this
    command's inputs (the config, data, model, the current directory: each equal to it or inside it).
    `label` names the setting (output.dir, --out); `fix` says how to get going."""
    if directory.is_symlink():
        raise ConfigError(f"{label}: {directory} is a symlink; lmtune will not delete through it",
                          [f"give the real path ({directory.resolve()}) or another directory"])
    real = directory.resolve()
    for given in inputs:
        path = Path(given).expanduser().resolve()
        if path == real or path.is_relative_to(real):
            what = "the current directory" if path == Path.cwd().resolve() and given == Path.cwd() else str(given)
            raise ConfigError(f"{label}: {directory} holds {what}, an input of this command; replacing "
                              "the directory would delete it", [fix])
    if any(directory.iterdir()) and not is_lmtune_output(directory):
        raise ConfigError(f"{label}: {directory} was not written by lmtune (no {OUTPUT_MARKER} marker), so "
                          "lmtune will not delete what it holds", [fix])


def run_inputs(cfg) -> list[Path]:
    """What a run reads and a replaced output.dir must not hold: the config file, data files, a local
    model directory, and the current directory."""
    paths = [Path.cwd()]
    source = getattr(cfg, "source", None)
    if source:
        paths.append(Path(source))
    paths += [Path(p) for p in (*cfg.data.train, *cfg.data.validation, *cfg.data.test)]
    model = Path(cfg.model.name_or_path).expanduser()
    if model.exists():
        paths.append(model)
    return paths


def probe_writable(directory: Path, label: str) -> None:
    """Create and remove a temporary directory: os.access says yes to root on read-only places."""
    try:
        Path(tempfile.mkdtemp(prefix=".lmtune-probe-", dir=directory)).rmdir()
    except OSError as exc:
        raise ConfigError(f"{label}: cannot write under {directory} ({exc.strerror})",
                          ["choose a directory you can write to"]) from None


def check_new_output_dir(out: Path, label: str, overwrite: bool, inputs: list[Path], fix: str) -> None:
    """An output directory a command is about to (re)write: not '.', not a symlink, not a file, empty
    or lmtune's own (with overwrite), holding no input, under a writable parent. Creates nothing."""
    if out.is_symlink():
        raise ConfigError(f"{label} {out} is a symlink; lmtune writes only to real directories",
                          [f"give the real path ({out.resolve()}) or a new directory"])
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{label} {out} exists and is not a directory", [f"choose a directory path for {label}"])
    if out.absolute() == Path.cwd().absolute() or Path.cwd().resolve().is_relative_to(out.resolve()):
        raise ConfigError(f"{label} {out} is the current directory (or holds it); lmtune writes a new "
                          "directory and replaces it whole", [f"name a new directory, e.g. {label} merged"])
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"{label} {out} is not empty", [fix])
        check_replaceable(out, inputs, label, "choose another directory")
    parent = out.absolute().parent
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{label} {parent} is not a directory, so {out} cannot be created under it",
                          ["choose a path whose parents are directories"])
    probe_writable(parent, label)


class RunDir:
    """Paths of one run. Nothing is created until `create()`."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def __truediv__(self, name: str) -> Path:
        """A path inside the run; a name that would lead outside it (absolute, '..') is refused."""
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise ValueError(f"{name!r} would be written outside the run directory {self.root}")
        return self.root / name

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def staging(self, name: str) -> Path:
        path = self.root / f".{name}.staging"
        if path.exists():
            shutil.rmtree(path)
        return path

    def check_writable(self, overwrite: bool, resume: bool, inputs: list[Path] = ()) -> None:
        """Refuse to clobber a previous run, to write outside the run, or where writing will fail;
        called before any heavy work, and creates nothing. `inputs`: what the run reads (run_inputs);
        overwrite replaces only a directory lmtune created that holds none of them."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise ConfigError(f"output.dir: {root} exists and is not a directory",
                              ["choose a directory path for output.dir"])
        if resume:
            if not root.is_dir():
                raise ConfigError(f"--resume: run directory {root} does not exist",
                                  ["start a run first, or point output.dir at the run to resume"])
            self.check_contained()
            _probe_writable(root)
            return
        if root.is_dir() and _holds_more_than_the_marker(root) and not overwrite:
            raise ConfigError(f"output.dir: {root} is not empty",
                              ["choose another output.dir, pass --resume to continue it, or set output.overwrite=true"])
        if overwrite and root.is_symlink():
            raise ConfigError(f"output.dir: {root} is a symlink; output.overwrite will not delete through it",
                              [f"give the real path ({root.resolve()}) or another output.dir"])
        if overwrite and root.is_dir():
            check_replaceable(root, list(inputs), "output.dir",
                              "choose another output.dir (a new directory), or move your files out of it")
        parent = root
        while not parent.exists() and not parent.is_symlink():
            parent = parent.parent
        if not parent.is_dir():
            raise ConfigError(f"output.dir: {parent} is not a directory, so {root} cannot be created under it",
                              ["choose a path whose parents are directories"])
        _probe_writable(parent)

    def check_contained(self) -> None:
        """Every path a run writes must stay inside it: a symlink in the run (or its checkpoints)
        that points elsewhere would make a resumed run write there."""
        real = self.root.resolve()
        entries = list(self.root.iterdir())
        if self.checkpoints.is_dir() and not self.checkpoints.is_symlink():
            entries += list(self.checkpoints.iterdir())
        for entry in entries:
            if entry.is_symlink() and not entry.resolve().is_relative_to(real):
                raise ConfigError(f"output.dir: {entry} is a symlink to {entry.resolve()}, outside the run "
                                  "directory; lmtune writes only inside the run",
                                  [f"replace the link by a real directory or file (rm {entry})"])

    def create(self, overwrite: bool) -> None:
        try:
            if overwrite and self.root.is_dir() and _holds_more_than_the_marker(self.root):
                shutil.rmtree(self.root)  # check_writable made sure it is lmtune's and holds no input
            self.root.mkdir(parents=True, exist_ok=True)
            write_output_marker(self.root, "run")
        except OSError as exc:
            raise ConfigError(f"output.dir: cannot create {self.root} ({exc.strerror})",
                              ["choose a directory you can write to"]) from None

    def complete_checkpoints(self) -> list[Path]:
        """Checkpoints that finished writing, oldest first (partial ones are ignored)."""
        if not self.checkpoints.is_dir():
            return []
        found = [p for p in self.checkpoints.glob("checkpoint-*") if _step(p) is not None and checkpoint_is_complete(p)]
        return sorted(found, key=_step)

    def last_checkpoint(self, max_step: int | None = None) -> Path | None:
        """The newest complete checkpoint (at or before `max_step` when given)."""
        done = [c for c in self.complete_checkpoints() if max_step is None or _step(c) <= max_step]
        return done[-1] if done else None

    def remove_partial_checkpoints(self) -> list[str]:
        """Delete checkpoints a kill interrupted (being written, or being rotated away), and the
        temporary files of interrupted atomic writes; returns the checkpoint names."""
        for tmp in self.root.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
        if not self.checkpoints.is_dir():
            return []
        partial = [p for p in self.checkpoints.glob("checkpoint-*") if p.is_dir() and not checkpoint_is_complete(p)]
        for p in partial:
            shutil.rmtree(p)
        # by step, then name: the same order whatever order the file system lists them in
        return sorted((p.name for p in partial), key=lambda n: (_step(Path(n)) or 0, n))


def _holds_more_than_the_marker(directory: Path) -> bool:
    """A run stopped between creating its directory and writing into it left only the marker:
    that counts as empty (the same command may start again)."""
    return any(p.name != OUTPUT_MARKER for p in directory.iterdir())


def _step(ckpt: Path) -> int | None:
    tail = ckpt.name.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


def _probe_writable(directory: Path) -> None:
    probe_writable(directory, "output.dir")


def process_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed worker whose parent died too may wait
    unreaped, e.g. in a container whose init does not reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True       # no /proc (not Linux): trust the signal check
    return stat.rpartition(")")[2].split()[0] != "Z"
