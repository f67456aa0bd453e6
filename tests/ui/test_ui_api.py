"""`lmtune ui`'s app through FastAPI's TestClient against real run directories: what each page and
endpoint says about the runs, the status rules, and the safety rules (token, Host, path)."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from lmtune.cli import main
from lmtune.report.compare import cells, compare
from lmtune.ui.app import create_app
from lmtune.ui.runs import NotARun, resolve_run
from ui_runs import age, append_metric, runs_dir_of, unfinished

LOCAL = "http://127.0.0.1"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return runs_dir_of(tmp_path_factory, "api_runs")


@pytest.fixture(scope="module")
def client(runs):
    return TestClient(create_app(runs), base_url=LOCAL)


def test_runs_api_lists_both_runs_with_eval_numbers(client, runs):
    by_name = {r["name"]: r for r in client.get("/api/runs").json()}
    assert set(by_name) == {"gentle", "harsh"}
    rows = {r.run: r for r in compare([runs / "gentle", runs / "harsh"])[0]}
    for name, got in by_name.items():
        assert got["status"] == "finished"
        assert (got["method"], got["value"], got["base_value"], got["forgetting"]) == \
            (rows[name].method, rows[name].value, rows[name].base_value, rows[name].forgetting)
    assert by_name["gentle"]["method"] == "lora" and by_name["harsh"]["method"] == "full"
    assert by_name["harsh"]["forgetting"] == "forgotten" and by_name["harsh"]["steps"] == 6


def test_runs_page_has_a_row_per_run(client):
    html = client.get("/").text
    assert html.count('<input type="checkbox" class="pick"') == 2
    assert '<a href="/runs/gentle">gentle</a>' in html and '<a href="/runs/harsh">harsh</a>' in html


def test_run_page_has_eval_config_and_data_sections(client):
    html = client.get("/runs/gentle").text
    for heading in ("Training curves", "Evaluation: base vs tuned", "Forgetting check", "Data", "Configuration"):
        assert f"<h2>{heading}</h2>" in html
    assert "execution_accuracy (primary)" in html and 'data-runs="[&quot;gentle&quot;]"' in html


def test_metrics_after_returns_only_new_rows(tmp_path_factory):
    root = runs_dir_of(tmp_path_factory, "metrics_runs")
    client = TestClient(create_app(root), base_url=LOCAL)
    first = client.get("/api/runs/harsh/metrics").json()
    assert first["next"] == len(first["rows"]) > 0 and first["reset"] is False
    append_metric(root / "harsh", {"step": 7, "loss": 0.5})
    more = client.get(f"/api/runs/harsh/metrics?after={first['next']}").json()
    assert more["rows"] == [{"step": 7, "loss": 0.5}] and more["next"] == first["next"] + 1
    (root / "harsh" / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n')   # a resume rewrote it
    again = client.get(f"/api/runs/harsh/metrics?after={more['next']}").json()
    assert again["reset"] is True and again["rows"] == [{"step": 1, "loss": 3.0}]


@pytest.mark.parametrize("state", ["running", "stopped", "failed"])
def test_status_of_an_unfinished_run(tmp_path_factory, state):
    root = runs_dir_of(tmp_path_factory, f"status_{state}")
    run = unfinished(root / "gentle", checkpoint_step=None if state == "failed" else 1)
    if state != "running":
        age(run, 3600)
    got = TestClient(create_app(root), base_url=LOCAL).get("/api/runs/gentle").json()
    assert got["status"] == state
    if state == "stopped":
        assert got["resume"] == f"lmtune train {run / 'config.yaml'} --resume"
    else:
        assert got["resume"] is None


def test_compare_page_table_is_lmtune_compares(client, runs):
    html = client.get("/compare?runs=gentle,harsh").text
    headers, body = cells(compare([runs / "gentle", runs / "harsh"])[0])
    for cell in headers + [c for row in body for c in row]:
        assert f">{cell}<" in html.replace("&#x27;", "'")


@pytest.mark.parametrize("path", ["/runs/%2e%2e", "/runs/..%2f..%2fetc", "/runs/%2e%2e%2fapi_runs0",
                                  "/api/runs/%2e%2e/metrics", "/runs/.hidden", "/runs/nope",
                                  "/compare?runs=gentle,..", "/compare?runs=gentle,../gentle",
                                  "/runs/gentle/report.html", "/static/..%2fapp.py"])
def test_paths_outside_runs_dir_are_404(client, path):
    assert client.get(path).status_code == 404


def test_a_symlink_out_of_runs_dir_is_not_a_run(runs, tmp_path):
    outside = shutil.copytree(runs / "gentle", tmp_path / "elsewhere")
    link = runs / "linked"
    link.symlink_to(outside)
    try:
        with pytest.raises(NotARun):
            resolve_run(runs, "linked")
        assert TestClient(create_app(runs), base_url=LOCAL).get("/runs/linked").status_code == 404
    finally:
        link.unlink()
    for name in ("..", "../x", "a/b", "", ".", "gentle/"):
        with pytest.raises(NotARun):
            resolve_run(runs, name)


def test_report_html_is_served_when_written(runs, client):
    assert main(["report", str(runs / "harsh")]) == 0
    resp = client.get("/runs/harsh/report.html")
    assert resp.status_code == 200 and "lmtune run report: harsh" in resp.text


def test_token_is_required_on_every_request(runs):
    app = create_app(runs, token="s3cret", allowed_hosts=["*"])
    anon = TestClient(app, base_url="http://192.0.2.7")
    for path in ("/", "/runs/gentle", "/api/runs", "/api/runs/gentle/metrics", "/static/ui.js"):
        assert anon.get(path).status_code == 401
    assert anon.get("/api/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert anon.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    browser = TestClient(app, base_url="http://192.0.2.7")
    assert browser.get("/?token=s3cret").status_code == 200      # sets the cookie...
    assert browser.get("/api/runs").status_code == 200           # ...that later requests carry


def test_loopback_server_refuses_foreign_host_headers(runs):
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 must not read the runs."""
    app = TestClient(create_app(runs), base_url="http://evil.example")
    assert app.get("/api/runs").status_code == 400


@pytest.mark.parametrize("argv, message", [
    (["--host", "0.0.0.0"], "without a token"),
    (["--port", "0"], "--port 0"),
    (["--port", "70000"], "--port 70000"),
    (["--data-dir", "/no/such/folder"], "--data-dir /no/such/folder: no such directory"),
    (["--max-upload-mb", "0"], "--max-upload-mb 0.0: must be above 0"),
])
def test_cli_refuses_unsafe_or_bad_flags(runs, capsys, argv, message, monkeypatch):
    monkeypatch.delenv("LMTUNE_UI_TOKEN", raising=False)
    assert main(["ui", str(runs), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_refuses_a_missing_runs_dir(tmp_path, capsys):
    assert main(["ui", str(tmp_path / "none")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_a_real_process_off_loopback_without_token_exits_2(runs):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "LMTUNE_UI_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "lmtune", "ui", str(runs), "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2 and "--token" in done.stderr and "Traceback" not in done.stderr


def test_a_changed_eval_json_shows_on_the_next_request(tmp_path_factory):
    """The parsed files are kept between requests: a new eval.json must still be seen."""
    import json

    root = runs_dir_of(tmp_path_factory, "cache_runs")
    client = TestClient(create_app(root), base_url=LOCAL)
    assert client.get("/api/runs/gentle").json()["forgetting"] == "ok"
    ev = json.loads((root / "gentle" / "eval.json").read_text())
    ev["forgetting"]["verdict"] = "forgotten"
    (root / "gentle" / "eval.json").write_text(json.dumps(ev))
    assert client.get("/api/runs/gentle").json()["forgetting"] == "forgotten"


def test_a_run_with_damaged_files_still_lists(tmp_path_factory):
    root = runs_dir_of(tmp_path_factory, "damaged_runs")
    (root / "gentle" / "config.yaml").write_text("model: [unclosed\n")
    (root / "gentle" / "eval.json").write_text('{"task": {"name"')            # cut by a kill
    client = TestClient(create_app(root), base_url=LOCAL)
    got = {r["name"]: r for r in client.get("/api/runs").json()}
    assert got["gentle"]["value"] is None and got["gentle"]["base"] == "-"
    assert got["harsh"]["forgetting"] == "forgotten"
    assert client.get("/").status_code == 200 and client.get("/runs/gentle").status_code == 200
