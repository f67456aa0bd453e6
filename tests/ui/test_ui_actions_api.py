"""The refusals of the UI's action endpoints (chat, /new), through FastAPI's TestClient: bounded
chat input, data files only from allowed folders, configs checked by lmtune's loader with its own
one-line messages, run names that stay plain. Nothing is loaded or started by these requests."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from lmtune.ui.app import create_app
from lmtune.ui.chat import MAX_PROMPT_CHARS
from tiny_models import write_alpaca

LOCAL = "http://127.0.0.1"
ACT = {"X-Lmtune-UI": "1"}


@pytest.fixture
def client(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    return TestClient(create_app(runs, data_dirs=[tmp_path / "data"]), base_url=LOCAL)


@pytest.mark.parametrize("body, status, says", [
    ({"run": "r", "messages": [{"role": "user", "content": "x" * (MAX_PROMPT_CHARS + 1)}]}, 413, "at most 16,000"),
    ({"run": "r", "messages": []}, 400, "messages: a list of 1 to 64"),
    ({"run": "r", "messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0]"),
    ({"run": "r", "messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}, 400, "max_tokens"),
])
def test_chat_input_is_bounded(client, body, status, says):
    resp = client.post("/api/chat", json=body, headers=ACT)
    assert resp.status_code == status and says in resp.json()["error"]


def test_chat_with_no_such_run_is_404(client):
    resp = client.post("/api/chat", json={"run": "../x", "messages": [{"role": "user", "content": "hi"}]}, headers=ACT)
    assert resp.status_code == 404


def test_data_outside_the_allowed_folders_is_refused(client, tmp_path):
    outside = write_alpaca(tmp_path / "elsewhere.jsonl", 4)
    resp = client.post("/api/new/inspect", json={"name": "r", "path": str(outside)}, headers=ACT)
    assert resp.status_code == 403 and "not inside a folder" in resp.json()["error"]
    (tmp_path / "data").mkdir()
    link = tmp_path / "data" / "link.jsonl"
    link.symlink_to(outside)                 # a symlink out of an allowed folder is outside too
    resp = client.post("/api/new/inspect", json={"name": "r", "path": str(link)}, headers=ACT)
    assert resp.status_code == 403


def test_config_problems_are_the_loaders_lines_and_nothing_is_written(client, tmp_path):
    runs = tmp_path / "runs"
    bad = "model:\n  name_or_path: tiny\ntrain:\n  learning_rate: fast\n  max_stepz: 3\n"
    resp = client.post("/api/new/validate", json={"name": "r", "config": bad}, headers=ACT)
    error = resp.json()["error"]
    assert resp.status_code == 422 and "train.learning_rate" in error and "train.max_stepz" in error
    assert "Traceback" not in error and str(runs / ".lmtune-ui") not in error
    assert not (runs / ".lmtune-ui" / "r.yaml").exists()
    outside = write_alpaca(tmp_path / "elsewhere.jsonl", 4)
    resp = client.post("/api/new/start", json={"name": "r", "config": f"data:\n  train: {outside}\n"}, headers=ACT)
    assert resp.status_code == 403 and not (runs / "r").exists()


@pytest.mark.parametrize("name", ["../x", "uploads", ".hidden", "a/b", ""])
def test_run_names_stay_plain(client, name):
    resp = client.post("/api/new/validate", json={"name": name, "config": "{}"}, headers=ACT)
    assert resp.status_code == 400 and "run name" in resp.json()["error"]


def test_actions_off_loopback_need_the_token(tmp_path):
    """A UI opened to other hosts: starting a run needs the token like every other request."""
    app = create_app(tmp_path, token="t0k", allowed_hosts=["*"])
    client = TestClient(app, base_url="http://lab-box:7860")
    body = {"name": "../bad", "config": "{}"}
    assert client.post("/api/new/start", json=body, headers=ACT).status_code == 401
    resp = client.post("/api/new/start", json=body, headers={**ACT, "Authorization": "Bearer t0k"})
    assert resp.status_code == 400 and "run name" in resp.json()["error"]      # past the token, to the checks


def test_chat_with_damaged_weights_is_the_loaders_message(tmp_path_factory):
    """A run whose model weights were cut short: 409 with the weight check's line, no 500."""
    import shutil

    from eval_runs import trained_runs

    root = tmp_path_factory.mktemp("damaged_runs")
    shutil.copytree(trained_runs(tmp_path_factory)["harsh"], root / "harsh")
    weights = root / "harsh" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    client = TestClient(create_app(root), base_url=LOCAL)
    resp = client.post("/api/chat", json={"run": "harsh", "messages": [{"role": "user", "content": "hi"}]}, headers=ACT)
    assert resp.status_code == 409 and "model.safetensors" in resp.json()["error"]
