"""What `lmtune export` writes besides its outputs, and how a rerun finds what a killed export left.

- The merged model (a run with an adapter) goes to a scratch folder made by tempfile.mkdtemp next
  to --out (never inside it), named `.lmtune-export-merge-XXXXXXXX`, holding from its first moment
  a marker (lmtune_output.json, kind "export-scratch") with the --out it serves, the host and pid.
- The GGUF is written to `--out/.model-QUANT.gguf.tmp` and renamed; the Modelfile and template go
  through rundir.write_text (`.NAME.XXXXXXXX.tmp`, renamed).

After a kill -9 these stay behind. A later export to the same --out removes exactly them: the tmp
files of the names export writes, and scratch folders whose marker names this --out and whose
process is gone. A user's own files, even hidden ones, never match.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

from lmtune import __version__
from lmtune.export.gguf_file import QUANTS
from lmtune.run.layout import OUTPUT_MARKER, process_alive

SCRATCH_PREFIX = ".lmtune-export-merge-"
SCRATCH_KIND = "export-scratch"


def gguf_tmp_name(gguf_name: str) -> str:
    return f".{gguf_name}.tmp"


def _is_our_tmp(name: str, outputs: list[str]) -> bool:
    """`.model-q8_0.gguf.tmp` (a quant export knows) or rundir.write_text's `.Modelfile.XXXXXXXX.tmp`."""
    if name in {gguf_tmp_name(f"model-{q}.gguf") for q in QUANTS}:
        return True
    return any(re.fullmatch(rf"\.{re.escape(o)}\.[a-z0-9_]{{8}}\.tmp", name) for o in outputs)


def nearest_existing(path: Path) -> Path:
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    return parent


def make_scratch(out: Path) -> Path:
    """A new scratch folder next to `out` (in its nearest existing parent), marked before use."""
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=nearest_existing(out)))
    marker = {"written_by": "lmtune", "kind": SCRATCH_KIND, "version": __version__,
              "out": str(out.absolute()), "host": socket.gethostname(), "pid": os.getpid()}
    (scratch / OUTPUT_MARKER).write_text(json.dumps(marker), encoding="utf-8")
    return scratch


def _abandoned_scratch(folder: Path, out: Path) -> bool:
    """A scratch folder lmtune made for this --out whose export process no longer runs."""
    if not folder.name.startswith(SCRATCH_PREFIX) or folder.is_symlink() or not folder.is_dir():
        return False
    try:
        marker = json.loads((folder / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(marker, dict) or marker.get("written_by") != "lmtune" or marker.get("kind") != SCRATCH_KIND:
        return False
    if marker.get("out") != str(out.absolute()):
        return False
    pid = marker.get("pid")
    same_host = marker.get("host") == socket.gethostname()
    return same_host and isinstance(pid, int) and not process_alive(pid)


def leftovers(out: Path, outputs: list[str]) -> list[Path]:
    """What an interrupted export to `out` left: our tmp files in it, our scratch folders beside it."""
    found = []
    if out.is_dir():
        found += [p for p in sorted(out.iterdir()) if p.is_file() and _is_our_tmp(p.name, outputs)]
    # the scratch went to the nearest parent that existed then: any ancestor of out
    for parent in out.absolute().parents:
        if parent.is_dir():
            try:
                found += [p for p in sorted(parent.glob(SCRATCH_PREFIX + "*")) if _abandoned_scratch(p, out)]
            except OSError:   # an unreadable ancestor holds nothing we made
                continue
    return found


def remove(paths: list[Path]) -> None:
    for p in paths:
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)
