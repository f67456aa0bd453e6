"""The run directory (DESIGN section 5) and atomic writes: every file is written under a temporary
name in the same directory and renamed into place, so a killed run never leaves a half-written
file that looks complete."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from lmtune.errors import ConfigError

COMPLETE_MARKER = "lmtune_complete"  # written last into a checkpoint; its absence means "partial"


def write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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


class RunDir:
    """Paths of one run. Nothing is created until `create()`."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def __truediv__(self, name: str) -> Path:
        return self.root / name

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def staging(self, name: str) -> Path:
        path = self.root / f".{name}.staging"
        if path.exists():
            shutil.rmtree(path)
        return path

    def check_writable(self, overwrite: bool, resume: bool) -> None:
        """Refuse to clobber a previous run; called before any heavy work."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise ConfigError(f"output.dir: {root} exists and is not a directory")
        if resume:
            if not root.is_dir():
                raise ConfigError(f"--resume: run directory {root} does not exist",
                                  ["start a run first, or point output.dir at the run to resume"])
            return
        if root.is_dir() and any(root.iterdir()) and not overwrite:
            raise ConfigError(f"output.dir: {root} is not empty",
                              ["choose another output.dir, pass --resume to continue it, or set output.overwrite=true"])
        parent = root
        while not parent.exists():
            parent = parent.parent
        if not os.access(parent, os.W_OK):
            raise ConfigError(f"output.dir: cannot write under {parent}", ["choose a directory you can write to"])

    def create(self, overwrite: bool) -> None:
        if overwrite and self.root.is_dir():
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    def complete_checkpoints(self) -> list[Path]:
        """Checkpoints that finished writing, oldest first (partial ones are ignored)."""
        if not self.checkpoints.is_dir():
            return []
        found = [p for p in self.checkpoints.glob("checkpoint-*") if (p / COMPLETE_MARKER).is_file()]
        return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[-1]))

    def last_checkpoint(self) -> Path | None:
        done = self.complete_checkpoints()
        return done[-1] if done else None

    def remove_partial_checkpoints(self) -> list[str]:
        if not self.checkpoints.is_dir():
            return []
        partial = [p for p in self.checkpoints.glob("checkpoint-*") if not (p / COMPLETE_MARKER).is_file()]
        for p in partial:
            shutil.rmtree(p)
        return [p.name for p in partial]
