"""Training processes the UI starts: the same `lmtune train` command line as a terminal's, as a
subprocess in its own process group, its output in a log under RUNS_DIR/.lmtune-ui/. Its pid is
recorded in the run directory (PROCESS_FILE) once `lmtune train` has created it (train refuses a
non-empty output.dir, so nothing is written there before), with the process's start time, so a
pid reused by another process never reads as this run running. Stop sends SIGINT to the group:
what Ctrl-C in a terminal does, so train takes its own interrupt path and prints the resume
command into the log."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from lmtune.run.layout import process_alive, write_text
from lmtune.run.process_record import start_time

PROCESS_FILE = "ui_process.json"
STATE_DIR = ".lmtune-ui"        # RUNS_DIR/.lmtune-ui: configs and logs of the runs the UI started


_start_time = start_time


def running_pid(record: dict) -> int | None:
    """The recorded pid when that very process still runs, else None."""
    pid = record.get("pid")
    if not isinstance(pid, int) or record.get("exit") is not None or not process_alive(pid):
        return None
    started = record.get("start_time")
    return pid if started is None or _start_time(pid) in (None, started) else None


def log_path(runs_dir: Path, name: str) -> Path:
    return runs_dir / STATE_DIR / f"{name}.log"


def config_path(runs_dir: Path, name: str) -> Path:
    return runs_dir / STATE_DIR / f"{name}.yaml"


def tail(path: Path, size: int = 6000) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - size))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


class Launcher:
    """The processes this UI started, by run name. A watcher thread per process writes its pid
    into the run directory when the directory appears, and its exit code when it ends."""

    def __init__(self, runs_dir: Path):
        self.runs_dir = runs_dir
        self.procs: dict[str, subprocess.Popen] = {}
        self.stopping: set[str] = set()
        self.lock = threading.Lock()

    def busy(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def start(self, name: str, run_dir: Path, argv: list[str]) -> subprocess.Popen:
        """`lmtune train ARGV` for the run `name`, writing into run_dir (through ui/train_child.py,
        which restores Ctrl-C if this UI runs with SIGINT ignored)."""
        with self.lock:
            if self.busy(name):
                raise RuntimeError(f"{name} is already running")
            log = log_path(self.runs_dir, name)
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "ab") as out:
                out.write(f"$ lmtune train {' '.join(argv)}\n".encode())
                out.flush()
                env = {**os.environ, "PYTHONUNBUFFERED": "1"}
                proc = subprocess.Popen([sys.executable, "-m", "lmtune.ui.train_child", *argv], stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                        start_new_session=True)
            self.procs[name] = proc
            self.stopping.discard(name)
        threading.Thread(target=self._watch, args=(name, run_dir, proc), daemon=True,
                         name=f"lmtune-ui-watch-{name}").start()
        return proc

    def _watch(self, name: str, run_dir: Path, proc: subprocess.Popen) -> None:
        record = {"pid": proc.pid, "start_time": _start_time(proc.pid), "started": time.time(),
                  "log": str(log_path(self.runs_dir, name))}
        written = False
        while proc.poll() is None:
            if not written and (run_dir / "config.yaml").is_file():
                write_text(run_dir / PROCESS_FILE, json.dumps(record))
                written = True
            time.sleep(0.2)
        if (run_dir / "config.yaml").is_file():   # the exit code, and whether this UI stopped it
            record.update(exit=proc.returncode, stopped=name in self.stopping)
            write_text(run_dir / PROCESS_FILE, json.dumps(record))

    def stop(self, name: str, run_dir: Path) -> int | None:
        """SIGINT to the run's process group (Ctrl-C); the pid comes from this UI or the run dir."""
        proc = self.procs.get(name)
        pid = proc.pid if proc is not None and proc.poll() is None else None
        if pid is None:
            try:
                pid = running_pid(json.loads((run_dir / PROCESS_FILE).read_text()))
            except (OSError, ValueError, AttributeError):
                pid = None
        if pid is None:
            return None
        self.stopping.add(name)
        try:
            os.killpg(os.getpgid(pid), signal.SIGINT)
        except ProcessLookupError:
            return None
        return pid
