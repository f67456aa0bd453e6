"""What /new does with files and configs: data files only from the allowed folders (RUNS_DIR/uploads
and the folders given to `lmtune ui --data-dir`), uploads written there atomically under a size cap,
`lmtune data check` and `lmtune advise` run in this process through their own command functions
(the command line parsed by lmtune's parser, the report collected instead of printed: no torch
import per click), and a config checked by lmtune's own loader before `lmtune train` gets it."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from lmtune.config import DATA_PATH_KEYS, load_config
from lmtune.errors import UserError
from lmtune.run.layout import write_text
from lmtune.ui.process import config_path

UPLOADS = "uploads"
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
DEFAULT_MAX_UPLOAD = 100 * 2**20


class Refused(Exception):
    """A request /new will not carry out; the message says why (HTTP status alongside)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def upload_dir(runs_dir: Path) -> Path:
    return runs_dir / UPLOADS


def allowed_dirs(runs_dir: Path, data_dirs: list[Path]) -> list[Path]:
    return [upload_dir(runs_dir).resolve(), *(d.resolve() for d in data_dirs)]


def data_file(path: str, allowed: list[Path]) -> Path:
    """The data file `path`, refused unless its real path lies inside an allowed folder."""
    real = Path(os.path.expanduser(path)).resolve()
    if not any(real.is_relative_to(d) for d in allowed):
        raise Refused(403, f"{path}: not inside a folder this UI may read data from "
                           f"({', '.join(map(str, allowed))}); upload it, or start `lmtune ui --data-dir DIR`")
    if not real.is_file():
        raise Refused(404, f"{path}: no such file")
    return real


def run_name(name: str, runs_dir: Path) -> str:
    if not NAME.match(name or "") or name == UPLOADS:
        raise Refused(400, f"run name {name!r}: use letters, digits, '.', '_' or '-' (at most 100), e.g. my-run")
    return name


def upload_name(name: str) -> str:
    base = Path(name or "").name
    if not NAME.match(base) or not base.lower().endswith(DATA_SUFFIXES):
        raise Refused(400, f"file name {name!r}: letters, digits, '.', '_' or '-', ending in "
                           f"{', '.join(DATA_SUFFIXES)}")
    return base


async def save_upload(chunks, runs_dir: Path, name: str, limit: int) -> Path:
    """Write the request body's chunks to RUNS_DIR/uploads/NAME: under a temporary name, renamed
    into place once whole; past `limit` bytes the partial file is removed and the upload refused.
    An existing file is never replaced."""
    folder = upload_dir(runs_dir)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / upload_name(name)
    if target.exists():
        raise Refused(409, f"uploads/{target.name} exists already; rename the file, or pick it from the list")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            async for chunk in chunks:
                size += len(chunk)
                if size > limit:
                    raise Refused(413, f"the upload is larger than {limit:,} bytes (lmtune ui --max-upload-mb)")
                fh.write(chunk)
        os.link(tmp, target)      # fails if the name was taken meanwhile: never replaces a file
    except FileExistsError:
        raise Refused(409, f"uploads/{target.name} exists already") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def list_data(allowed: list[Path], limit: int = 200) -> list[str]:
    """Data files in the allowed folders (two levels deep), for the picker."""
    found = []
    for root in allowed:
        for pattern in ("*", "*/*"):
            for p in sorted(root.glob(pattern)) if root.is_dir() else []:
                if p.suffix.lower() in DATA_SUFFIXES and p.is_file() and not p.name.startswith("."):
                    found.append(str(p))
    return found[:limit]


def lmtune_tool(module, argv: list[str], command) -> tuple[int, str]:
    """`lmtune COMMAND ARGV` through the command module's own parser and `command(args, emit)`:
    (exit code, the lines it reported). A user error reads as the CLI prints it (exit 2)."""
    import argparse

    lines: list[str] = []
    try:
        parser = argparse.ArgumentParser(prog="lmtune", exit_on_error=False)
        module.register(parser)
        args = parser.parse_args(argv)
        code = command(args, lines.append)
    except UserError as exc:
        lines.append(exc.render())
        code = 2
    except (SystemExit, argparse.ArgumentError):     # argparse's own refusal (printed to stderr)
        lines.append(f"error: lmtune refused the arguments {argv}")
        code = 2
    return code, "\n".join(lines)


def check_and_advise(path: Path, runs_dir: Path, name: str, model: str) -> dict:
    """`lmtune data check` and `lmtune advise` on one file; advise's config (written under
    RUNS_DIR/.lmtune-ui) comes back as text, with output.dir the run's directory."""
    from lmtune.commands import advise, data

    draft = config_path(runs_dir, name + ".advised")
    draft.parent.mkdir(parents=True, exist_ok=True)
    draft.unlink(missing_ok=True)
    check_rc, check_out = lmtune_tool(data, ["check", str(path), "--model", model], data.check)
    advise_rc, advise_out = lmtune_tool(advise, ["--data", str(path), "--model", model, "--yes", "--force",
                                                 "--out", str(draft), "--output-dir", str(runs_dir / name)], advise.run)
    config = draft.read_text(encoding="utf-8") if advise_rc == 0 and draft.is_file() else ""
    draft.unlink(missing_ok=True)
    final = str(config_path(runs_dir, name))     # where start writes the edited config
    config = config.replace(str(draft), final)
    # "wrote FILE; next: lmtune train FILE": here the next step is the editor and the start button
    advise_out = "\n".join(line for line in advise_out.splitlines() if not line.startswith(f"wrote {draft}"))
    return {"check": check_out, "check_ok": check_rc == 0, "advise": advise_out, "advise_ok": advise_rc == 0,
            "config": config}


def checked_config(text: str, runs_dir: Path, name: str, allowed: list[Path]) -> Path:
    """Write the edited YAML to RUNS_DIR/.lmtune-ui/NAME.yaml once lmtune's loader accepts it
    (output.dir set to RUNS_DIR/NAME) and its data files lie in allowed folders. Refused with the
    loader's own lines otherwise; nothing is written then."""
    target = config_path(runs_dir, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".yaml", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            cfg = load_config(tmp, [f"output.dir={runs_dir / name}"])
        except UserError as exc:
            raise Refused(422, exc.render().replace(tmp, "config")) from None
        for key in DATA_PATH_KEYS:
            value = getattr(cfg.data, key, None)
            for item in [value] if isinstance(value, str) else (value or []):
                data_file(item, allowed)
        write_text(target, text)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def train_argv(runs_dir: Path, name: str) -> list[str]:
    return [str(config_path(runs_dir, name)), f"output.dir={runs_dir / name}"]


def resume_argv(run_dir: Path) -> list[str]:
    return [str(run_dir / "config.yaml"), "--resume"]
