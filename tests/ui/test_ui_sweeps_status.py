"""The runs page's sweep groups and the status a UI-started run's recorded process gives, through
FastAPI's TestClient against real run directories (copies of the session's trained runs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from lmtune.ui.app import create_app
from lmtune.ui.process import PROCESS_FILE, running_pid
from lmtune.ui.runs import NotARun, resolve_run
from ui_runs import age, runs_dir_of, unfinished

LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """gentle, harsh, and a sweep `sw` (study.db) whose trials are copies of them."""
    root = runs_dir_of(tmp_path_factory, "sweep_runs")
    (root / "sw").mkdir()
    (root / "sw" / "study.db").write_bytes(b"")
    shutil.copytree(root / "gentle", root / "sw" / "trial-0000")
    shutil.copytree(root / "harsh", root / "sw" / "trial-0001")
    (root / "not-a-sweep").mkdir()
    shutil.copytree(root / "gentle", root / "not-a-sweep" / "trial-0000")
    return root


def test_sweep_trials_are_grouped_under_their_sweep(runs):
    html = TestClient(create_app(runs), base_url=LOCAL).get("/").text
    top, sweep = html.split('<h2 class="sweep">', 1)
    assert '<a href="/runs/gentle">' in top and "sw/trial" not in top
    assert sweep.startswith("sweep sw") and "2 trials, 2 finished" in sweep
    assert '<a href="/runs/sw/trial-0000">sw/trial-0000</a>' in sweep and "sw/trial-0001" in sweep
    assert "not-a-sweep" not in html


def test_a_trial_has_its_page_and_metrics(runs):
    client = TestClient(create_app(runs), base_url=LOCAL)
    assert "<h1>sw/trial-0001</h1>" in client.get("/runs/sw/trial-0001").text
    metrics = client.get("/api/runs/sw%2Ftrial-0001/metrics").json()
    assert metrics["status"] == "finished" and metrics["rows"]


@pytest.mark.parametrize("name", ["not-a-sweep/trial-0000", "sw/../gentle", "sw/trial-0000/..", "sw/.x",
                                  "gentle/adapter", "sw/trial-0000/checkpoints", "/gentle"])
def test_names_outside_a_sweep_are_refused(runs, name):
    with pytest.raises(NotARun):
        resolve_run(runs, name)


def test_status_follows_the_recorded_process(tmp_path_factory):
    """A live recorded pid reads running even when the files are old; once it ends, a run the UI
    stopped reads stopped with its resume command (no checkpoint needed), a crashed one failed; a
    reused pid (another process's start time) never reads as running."""
    root = runs_dir_of(tmp_path_factory, "process_runs")
    run = unfinished(root / "gentle", checkpoint_step=None)
    age(run, 3600)
    client = TestClient(create_app(root), base_url=LOCAL)
    state = lambda: client.get("/api/runs/gentle").json()  # noqa: E731
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        from lmtune.ui.process import _start_time

        record = {"pid": sleeper.pid, "start_time": _start_time(sleeper.pid)}
        (run / PROCESS_FILE).write_text(json.dumps(record))
        assert running_pid(record) == sleeper.pid and state()["status"] == "running"
        (run / PROCESS_FILE).write_text(json.dumps({**record, "start_time": "1"}))
        assert state()["status"] == "failed"
    finally:
        sleeper.kill()
        sleeper.wait()
    (run / PROCESS_FILE).write_text(json.dumps({**record, "exit": 130, "stopped": True}))
    got = state()
    assert got["status"] == "stopped" and got["resume"] == f"lmtune train {run / 'config.yaml'} --resume"
    (run / PROCESS_FILE).write_text(json.dumps({**record, "exit": 1, "stopped": False}))
    assert state()["status"] == "failed"
    os.utime(run / "metrics.jsonl")    # fresh files: with a recorded process, its exit still decides
    assert state()["status"] == "failed"
