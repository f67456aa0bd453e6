"""RUNS_DIR/NAME/process.json: which process trains this run and how it ended, written by the run
itself. `lmtune train` records its pid, that process's start time (so a pid the kernel later hands
to another process never reads as this run), the host, the clock time and the command line as soon
as the run directory exists; on exit it adds how it ended: finished, failed (exit code) or
interrupted (Ctrl-C, with the step). A kill -9 cannot write anything: its record keeps state
"running" with a pid that is gone (or reused), which readers take as killed.

Under several processes one record describes the launcher (the process the user started, and the
one that outlives its workers): the launcher puts its pid and start time into the environment,
global rank 0 writes the record with them once it has created the run directory, and the launcher
writes the end. Only the process a record names writes its end, so a worker, or a second
`lmtune train --resume` that fails its checks, never marks another process's run as ended."""

from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path

from lmtune.run.layout import process_alive, write_json

RECORD_FILE = "process.json"
_OWNER_ENV = "LMTUNE_RUN_OWNER"     # the launcher's pid, start time and command, for its workers
_command: list[str] | None = None   # the command line, as `lmtune train` was given it


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None elsewhere or when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def set_command(argv: list[str]) -> None:
    """The command line this process runs (commands/train.py), recorded when the run starts."""
    global _command
    _command = list(argv)


@contextmanager
def launching():
    """Around the launcher's start of its workers (they inherit the environment): the record rank 0
    writes names the launcher. Removed afterwards, so no later process takes it for its own."""
    os.environ[_OWNER_ENV] = json.dumps({"pid": os.getpid(), "start_time": start_time(os.getpid()),
                                         "command": _command})
    try:
        yield
    finally:
        os.environ.pop(_OWNER_ENV, None)


def _owner() -> tuple[int, str | None, list[str] | None]:
    """The launcher when this is one of its workers (torchrun sets LOCAL_RANK), else this process."""
    try:
        launcher = json.loads(os.environ.get(_OWNER_ENV, ""))
        if "LOCAL_RANK" in os.environ and int(launcher["pid"]) != os.getpid():
            return int(launcher["pid"]), launcher.get("start_time"), launcher.get("command")
    except (ValueError, TypeError, KeyError):
        pass
    return os.getpid(), start_time(os.getpid()), _command


def read(run_root: Path) -> dict | None:
    try:
        value = json.loads((Path(run_root) / RECORD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def started(run_root: Path) -> None:
    """The run has its directory: record the process that trains it (replacing an earlier
    attempt's record on --resume). Only under `lmtune train` (set_command): a sweep's trials,
    trained inside the sweep's process, have none."""
    if _command is None:
        return
    pid, ticks, command = _owner()
    write_json(Path(run_root) / RECORD_FILE, {
        "pid": pid, "start_time": ticks, "host": socket.gethostname(), "started": time.time(),
        "command": command, "cwd": os.getcwd(), "state": "running"})


def ended(run_root: Path, state: str, exit_code: int | None = None, step: int | None = None) -> None:
    """Record how this process's run ended; nothing when the record names another process."""
    global _command
    _command = None
    record = read(run_root)
    if record is None or record.get("pid") != os.getpid() or record.get("state") != "running":
        return
    record.update(state=state, exit_code=exit_code, ended=time.time())
    if step is not None:
        record["step"] = step
    write_json(Path(run_root) / RECORD_FILE, record)


def liveness(record: dict) -> bool | None:
    """True: the recorded process still trains; False: it ended or is gone (a reused pid, with
    another start time, counts as gone); None: it ran on another host, so this one cannot tell."""
    if record.get("state") != "running":
        return False
    if record.get("host") not in (None, socket.gethostname()):
        return None
    pid = record.get("pid")
    if not isinstance(pid, int) or not process_alive(pid):
        return False
    recorded = record.get("start_time")
    return recorded is None or start_time(pid) in (None, recorded)
