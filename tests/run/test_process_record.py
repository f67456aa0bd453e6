"""process.json, the record `lmtune train` keeps of its own process (run/process_record.py), and the
status the UI reads from it (ui/runs.py's run_status): real tiny runs that finish, are interrupted by
a real SIGINT, and are killed by SIGKILL in a forked `lmtune train` process."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from lmtune.cli import main
from lmtune.run import process_record
from lmtune.run.layout import RunDir
from lmtune.ui.app import create_app
from lmtune.ui.runs import ACTIVE_SECONDS, run_status
from tiny_models import tiny_run_inputs
from ui_runs import age

@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return tiny_run_inputs(tmp_path_factory.mktemp("record"))


def _config(inputs, out: Path, max_steps: int) -> Path:
    cfg = {"model": {"name_or_path": str(inputs.model)},
           "data": {"train": [str(inputs.data)], "val_split": 0.0, "max_length": 64, "template": "alpaca"},
           "train": {"max_steps": max_steps, "batch_size": 2, "grad_accum": 1, "logging_steps": 1,
                     "save_steps": 1, "load_best": False, "threads": 1},
           "eval": {"after_train": False, "forgetting_check": False},
           "output": {"dir": str(out), "report": False}}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _logged_step(run: Path) -> int:
    try:
        rows = (run / "metrics.jsonl").read_text().split("\n")[:-1]
    except OSError:
        return 0
    return max((json.loads(r).get("step", 0) for r in rows if r.strip()), default=0)


def test_a_finished_train_records_its_process_and_end(inputs, tmp_path):
    run = tmp_path / "done"
    cfg = _config(inputs, run, max_steps=2)
    assert main(["train", str(cfg), "train.seed=3"]) == 0
    record = process_record.read(run)
    assert (record["pid"], record["start_time"]) == (os.getpid(), process_record.start_time(os.getpid()))
    assert record["host"] == socket.gethostname() and record["cwd"] == os.getcwd()
    assert record["command"] == ["lmtune", "train", str(cfg), "train.seed=3"]
    assert (record["state"], record["exit_code"]) == ("finished", 0) and record["ended"] >= record["started"]
    summary = json.loads((run / "train_summary.json").read_text())
    assert run_status(run, summary).state == "finished"
    # the same (living) pid once its record is marked ended never reads running, even with fresh files
    (run / "train_summary.json").unlink()
    assert run_status(run, None).state == "stopped"


def test_ctrl_c_records_interrupted_with_its_step(inputs, tmp_path, capsys):
    run = tmp_path / "stopped"
    cfg = _config(inputs, run, max_steps=400)
    seen: list = []

    def interrupt_after_step_2():   # a real SIGINT, as Ctrl-C sends
        deadline = time.time() + 300
        while time.time() < deadline:
            if _logged_step(run) >= 2:
                seen.append(_logged_step(run))
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.01)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)   # a background suite ignores it
    watcher = threading.Thread(target=interrupt_after_step_2, daemon=True)
    watcher.start()
    try:
        assert main(["train", str(cfg)]) == 130, seen
    finally:
        signal.signal(signal.SIGINT, previous)
    watcher.join()
    record = process_record.read(run)
    assert (record["state"], record["exit_code"]) == ("interrupted", 130)
    assert record["step"] >= 2 and f"stopped at step {record['step']} of 400" in capsys.readouterr().err
    status = run_status(run, None)
    assert (status.state, status.detail) == ("stopped", f"interrupted at step {record['step']}")
    assert status.resume == f"lmtune train {run / 'config.yaml'} --resume"


def test_a_train_killed_by_sigkill_reads_running_then_stopped(inputs, tmp_path):
    """While it trains its record says running even when its files look old (no 2-minute guess); after
    kill -9 the record still says running, its pid is gone: stopped, with the resume command."""
    run = tmp_path / "killed"
    cfg = _config(inputs, run, max_steps=400)
    # a forked `lmtune train` (this process has imported torch already: no second start-up to wait for)
    proc = multiprocessing.get_context("fork").Process(target=main, args=(["train", str(cfg)],), daemon=True)
    proc.start()
    try:
        deadline = time.time() + 120
        while RunDir(run).last_checkpoint() is None and proc.is_alive() and time.time() < deadline:
            time.sleep(0.05)
        assert proc.is_alive(), f"lmtune train ended early (exit {proc.exitcode})"
        record = process_record.read(run)
        assert (record["pid"], record["state"]) == (proc.pid, "running")
        age(run, 2 * ACTIVE_SECONDS)
        assert run_status(run, None).state == "running"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.join()
    age(run, 0)   # fresh files: the dead pid decides, not the clock
    status = run_status(run, None)
    assert status.state == "stopped" and status.resume == f"lmtune train {run / 'config.yaml'} --resume"
    assert status.detail == f"killed (process {proc.pid} is gone)"
    client = TestClient(create_app(tmp_path), base_url="http://127.0.0.1")   # what the run page polls
    polled = client.get("/api/runs/killed/metrics").json()
    assert (polled["status"], polled["resume"], polled["detail"]) == ("stopped", status.resume, status.detail)
    assert f'<span class="detail">(killed (process {proc.pid} is gone))</span>' in client.get("/runs/killed").text
    assert process_record.read(run)["state"] == "running"   # nothing could write the end


def _record(run: Path, **fields) -> None:
    run.mkdir(exist_ok=True)
    (run / "config.yaml").write_text("{}\n")
    (run / process_record.RECORD_FILE).write_text(json.dumps(
        {"pid": os.getpid(), "start_time": process_record.start_time(os.getpid()),
         "host": socket.gethostname(), "state": "running", **fields}))


def test_a_living_pid_with_another_start_time_is_not_running(tmp_path):
    run = tmp_path / "reused"
    _record(run)
    age(run, 2 * ACTIVE_SECONDS)
    assert run_status(run, None).state == "running"           # this very process
    _record(run, start_time="1")                                # same pid, another process
    assert run_status(run, None).state == "stopped"
    _record(run, state="failed", exit_code=1)
    assert (run_status(run, None).state, run_status(run, None).detail) == ("failed", "exit code 1")


def test_a_record_from_another_host_falls_back_to_the_files_age(tmp_path):
    run = tmp_path / "remote"
    _record(run, host="not-" + socket.gethostname(), pid=1)
    assert run_status(run, None).state == "running"            # files just written
    age(run, 2 * ACTIVE_SECONDS)
    assert run_status(run, None).state == "stopped"


def test_a_record_ends_only_for_the_process_it_names(tmp_path):
    run = tmp_path / "other"
    _record(run, pid=os.getppid(), start_time=process_record.start_time(os.getppid()))
    process_record.ended(run, "failed", 2)
    assert process_record.read(run)["state"] == "running"
