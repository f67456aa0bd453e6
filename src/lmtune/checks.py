"""Checks every command runs on its arguments before any model loads: numbers (finite, in range)
and paths (exists, readable, UTF-8 where text, file vs directory, output writable, not '.', not a
symlink). Each failure is one UserError (exit 2) and nothing has been written or deleted yet.
Standard library only at import: commands call these before importing torch, and the few checks
that read data import lmtune.data (numpy, pyarrow) when they run."""

from __future__ import annotations

import math
import os
from pathlib import Path

from lmtune.errors import ConfigError, DataError, UserError


def number(flag: str, value, *, min: float | None = None, max: float | None = None,
           min_exclusive: bool = False, hint: str = "") -> None:
    """A numeric flag: finite and within [min, max] (min excluded with min_exclusive). None passes."""
    if value is None:
        return
    fix = [hint] if hint else []
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{flag}: got {value}, must be a finite number", fix)
    if min is not None and (value < min or (min_exclusive and value == min)):
        raise UserError(f"{flag}: got {value}, must be {'>' if min_exclusive else '>='} {min}", fix)
    if max is not None and value > max:
        raise UserError(f"{flag}: got {value}, must be <= {max}", fix)


def input_file(path: str | Path, flag: str, text: bool = False) -> Path:
    """An existing, readable regular file; with `text`, also valid UTF-8 (checked in blocks)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{flag} {path}: file not found", ["check the path (relative paths start in the current "
                                                           f"directory, {Path.cwd()})"])
    if p.is_dir():
        raise UserError(f"{flag} {path}: is a directory, expected a file", ["give the path of a file"])
    from lmtune.data.readers import special_kind   # lazy: lmtune.data loads numpy and pyarrow

    kind = special_kind(p)
    if kind or not p.is_file():
        raise UserError(f"{flag} {path}: not a regular file: {kind or 'not a file'}", ["give the path of a file"])
    try:
        with open(p, "rb") as fh:
            if text:
                _utf8(fh, path, flag)
            else:
                fh.read(1)
    except OSError as exc:
        raise UserError(f"{flag} {path}: cannot read ({exc.strerror})", ["check the file's permissions"]) from None
    return p


def _utf8(fh, path: str | Path, flag: str) -> None:
    """The file is UTF-8 text, decoded in blocks (a large file is never held whole)."""
    import codecs

    decoder, lines, offset = codecs.getincrementaldecoder("utf-8")(), 1, 0
    while True:
        block = fh.read(1 << 20)
        pending = decoder.getstate()[0]      # the start of a character cut by the previous block
        try:
            decoder.decode(block, final=not block)
        except UnicodeDecodeError as exc:    # exc.start counts from the pending bytes
            line = lines + (pending + block)[: exc.start].count(b"\n")
            raise UserError(f"{flag} {path}:{line}: not UTF-8 text ({exc.reason} at byte "
                            f"{offset - len(pending) + exc.start})",
                            ["save the file as UTF-8 (a binary file is not a prompt file)"]) from None
        if not block:
            return
        lines += block.count(b"\n")
        offset += len(block)


def input_dir(path: str | Path, flag: str, what: str = "directory") -> Path:
    """An existing, readable directory."""
    p = Path(path).expanduser()
    if not p.exists():
        raise UserError(f"{flag} {path}: no such {what}", ["check the path"])
    if not p.is_dir():
        raise UserError(f"{flag} {path}: is a file, expected a {what}", [f"give the path of a {what}"])
    if not os.access(p, os.R_OK | os.X_OK):
        raise UserError(f"{flag} {path}: cannot read the {what}", ["check its permissions"])
    return p


def output_file(path: str | Path, flag: str, overwrite: bool = False, overwrite_flag: str = "--overwrite") -> Path:
    """A file a command will write: not a directory, not a symlink, not an existing file (unless
    `overwrite`), under a directory it can write to (missing ones are created). Creates nothing."""
    p = Path(path).expanduser()
    if str(path) in ("", ".", "..") or p.is_dir():
        raise UserError(f"{flag} {path}: is a directory, expected a file name", [f"e.g. {flag} out.txt"])
    if p.is_symlink():
        raise UserError(f"{flag} {path}: is a symlink; lmtune writes only to real files",
                        [f"give the real path ({p.resolve()}) or a new file name"])
    if p.exists() and not overwrite:
        raise UserError(f"{flag} {path}: already exists", [f"choose another file name, or pass {overwrite_flag}"])
    parent = p.absolute().parent
    while not parent.exists() and not parent.is_symlink():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{flag} {path}: {parent} is not a directory", ["choose a path whose parents are directories"])
    if not _can_write(parent):
        raise UserError(f"{flag} {path}: cannot write in {parent}", ["choose a directory you can write to"])
    return p


def writable_dir(path: Path, flag: str) -> None:
    """A directory a command writes into (a run getting eval.json, report.html)."""
    if not _can_write(path):
        raise UserError(f"{flag} {path}: cannot write in this directory (read-only)",
                        ["make it writable, or copy the run somewhere you can write"])


def _can_write(directory: Path) -> bool:
    """Create and remove a temporary file: os.access says yes to root on read-only places."""
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(prefix=".lmtune-probe-", dir=directory)
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


# ---------------------------------------------------------------- a run's inputs, before training

def data_paths(cfg) -> None:
    """data.train/validation/test and a replay file: a FIFO, a device or a socket, given or inside a
    given directory, stops the run now, before any model loads (reading one blocks forever or never ends). Missing
    files and bad records are the data pipeline's to report, all at once."""
    from lmtune.data.readers import listing, odd_file   # lazy: lmtune.data loads numpy and pyarrow

    keys = [(f"data.{split}", given) for split in ("train", "validation", "test")
            for given in getattr(cfg.data, split) or []]
    replay = cfg.data.replay
    if replay.ratio > 0 and replay.source not in ("general", "self"):
        keys.append(("data.replay.source", replay.source))
    problems = []
    for key, given in keys:
        path = Path(given).expanduser()
        for file in listing(path) if path.is_dir() else [path]:
            odd = odd_file(file)
            if odd:
                problems.append(f"{key}: {file}: {odd}")
    if problems:
        n = len(problems)
        raise DataError(f"{n} data path{'s' if n != 1 else ''} cannot be read as data", problems)


def run_test_files(cfg) -> None:
    """data.test is read only after training (eval): read and validate it now instead, so a missing
    or broken test file stops the run before hours of training, not after."""
    if not cfg.data.test:
        return
    from lmtune.data import load_split   # lazy: lmtune.data loads numpy and pyarrow

    load_split(list(cfg.data.test), cfg.data.format, "test data (data.test)")


POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")


def model_positions(ref: str, revision: str | None = None) -> tuple[int | None, str]:
    """(longest sequence the model's position embeddings cover, where that was read), from its
    config.json alone; (None, "") when the config names none or cannot be read without a download."""
    import json

    local = Path(ref).expanduser() / "config.json"
    try:
        if local.is_file():
            raw, where = json.loads(local.read_text(encoding="utf-8")), str(local)
        else:
            from transformers import AutoConfig

            raw, where = AutoConfig.from_pretrained(ref, revision=revision).to_dict(), f"{ref} config"
    except Exception:  # noqa: BLE001 - an unreadable config is reported by the model checks/loader
        return None, ""
    for node in (raw, raw.get("text_config") or {}):
        for key in POSITION_KEYS:
            if isinstance(node.get(key), int) and node[key] > 0:
                return node[key], f"{key} in {where}"
    return None, ""


def max_length_fits(cfg, ref: str) -> None:
    """data.max_length beyond the model's positions would index past its position table (a crash
    mid-run) or silently run a RoPE model out of the range it was trained on: refuse it."""
    positions, where = model_positions(ref, cfg.model.revision)
    if positions is not None and cfg.data.max_length > positions:
        raise ConfigError(f"data.max_length: {cfg.data.max_length} is longer than the model's "
                          f"{positions} positions ({where})",
                          [f"set data.max_length={positions} or less (longer examples are truncated, counted "
                           "in data_stats.json)"])
