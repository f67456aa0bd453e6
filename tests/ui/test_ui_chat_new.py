"""/chat and /new in a real browser (Debian's chromium, selenium) against real tiny runs: the chat
answer is `lmtune generate`'s, a run started from /new shows as running, its loss curve grows live
(the one real run of the UI browser tests), stops through Ctrl-C's
path with its resume command and resumes; --read-only hides and refuses /new's actions; the
upload cap holds. Skipped, with the reason, without chromium, its driver or selenium."""

from __future__ import annotations

import json
import shutil
import signal
import time
import urllib.error
import urllib.request

import pytest
import yaml

from browser import skip_reason, wait_until
from lmtune.cli import main
from lmtune.report.build import read_metrics
from lmtune.serve.server import ThreadedServer
from lmtune.ui.app import create_app
from tiny_models import write_alpaca

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
PROMPT = "List the customers in Cairo."


def _post(url: str, body: bytes = b"{}", header: bool = True) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"X-Lmtune-UI": "1"} if header else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _text(browser, css: str) -> str:
    return browser.find_element("css selector", css).get_attribute("textContent")


def test_chat_answers_equal_lmtune_generate(browser, tmp_path_factory, capsys):
    """A full fine-tune (harsh) beside a LoRA run's base (gentle's), streamed; each answer is
    `lmtune generate`'s for the prompt (greedy), and the two differ (two models really ran)."""
    from eval_runs import trained_runs
    from selenium.webdriver.support.ui import Select

    root = tmp_path_factory.mktemp("chat_runs")
    for run in ("gentle", "harsh"):
        shutil.copytree(trained_runs(tmp_path_factory)[run], root / run)
    with ThreadedServer(create_app(root)) as base:
        browser.get(base + "/chat")
        Select(browser.find_element("id", "model-a")).select_by_value("run:harsh")
        Select(browser.find_element("id", "model-b")).select_by_value("base:gentle")
        browser.find_element("id", "max-tokens").clear()
        browser.find_element("id", "max-tokens").send_keys("24")
        browser.find_element("id", "chat-input").send_keys(PROMPT)
        browser.find_element("id", "send").click()
        done = '#transcript-{} .msg.assistant[data-done="1"]'
        assert wait_until(lambda: all(browser.find_elements("css selector", done.format(p)) for p in "ab"), 60)
        shown = {p: _text(browser, done.format(p)) for p in "ab"}
    capsys.readouterr()
    expected = {}
    for pane, args in (("a", ["harsh"]), ("b", ["gentle", "--no-adapter"])):
        assert main(["generate", str(root / args[0]), "--prompt", PROMPT, "--max-new-tokens", "24", *args[1:]]) == 0
        expected[pane] = capsys.readouterr().out[:-1]      # print() adds one newline
    assert shown == expected
    assert shown["a"] != shown["b"]


def _advised(browser) -> dict:
    return yaml.safe_load(browser.find_element("id", "config").get_attribute("value"))


def _set_config(browser, config: dict) -> None:
    browser.execute_script("document.getElementById('config').value = arguments[0]", yaml.safe_dump(config))


@pytest.fixture
def sigint_ignored():
    """The UI as `lmtune ui &` from a script runs it: SIGINT ignored, which children inherit."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, previous)


LOSS_PLOT = '.plot[data-key="loss"]'


def _watch_the_loss_curve_grow(browser, run_url: str) -> list[int]:
    """In a second tab, the run page of the run training now: its loss curve gains points without a
    reload. Leaves that tab open (marked) and the /new tab in front."""
    new_tab = browser.current_window_handle
    browser.switch_to.new_window("tab")
    browser.get(run_url)
    browser.execute_script("window.sameDocument = true")
    points = lambda: int(browser.find_element("css selector", LOSS_PLOT).get_attribute("data-points"))  # noqa: E731
    seen = [points()]
    deadline = time.monotonic() + 60
    while len(set(seen)) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
        seen.append(points())
    assert len(set(seen)) >= 3 and sorted(seen) == seen, seen       # it grew, twice, while open
    assert browser.execute_script("return window.sameDocument") is True
    browser.switch_to.window(new_tab)
    return seen


def test_new_run_uploads_checks_starts_stops_and_resumes(browser, tmp_path, sigint_ignored):
    """Upload a file, see data check and advise, fix a bad key (the loader's one line), start a
    tiny run: it shows as running, its run page (another tab) draws the loss curve live, one point
    per logged step, without a reload; Ctrl-C (stop) leaves it stopped with its resume command in the
    page and train's own interrupt message in the log; resume runs it again."""
    runs = tmp_path / "runs"
    runs.mkdir()
    data = write_alpaca(tmp_path / "my-data.jsonl", 24)
    app = create_app(runs, data_dirs=[])
    with ThreadedServer(app) as base:
        try:
            browser.get(base + "/new")
            browser.find_element("id", "upload").send_keys(str(data))
            uploaded = runs / "uploads" / "my-data.jsonl"
            assert wait_until(lambda: browser.find_element("id", "data-path").get_attribute("value") == str(uploaded), 10)
            assert uploaded.read_bytes() == data.read_bytes()
            name = browser.find_element("id", "run-name")
            name.clear()
            name.send_keys("from-ui")
            browser.find_element("id", "inspect").click()
            assert wait_until(lambda: _text(browser, "#inspect-note") in ("done", "see the problems below"), 120)
            assert "ok: 24 examples, no problems" in _text(browser, "#check-out")
            assert "verdict:" in _text(browser, "#advise-out")
            config = _advised(browser)
            assert config["data"]["train"] == [str(uploaded)]
            config["train"].update(epochs=1, max_steps=400, logging_steps=1, save_steps=1, learning_rate="fast")
            _set_config(browser, config)
            browser.find_element("id", "validate").click()
            assert wait_until(lambda: "train.learning_rate" in _text(browser, "#config-note"), 10)
            assert "Traceback" not in _text(browser, "#config-note")
            config["train"].update(learning_rate=1e-4)
            config["eval"] = {"after_train": False}
            config["output"] = {"report": False}
            _set_config(browser, config)
            browser.find_element("id", "start").click()
            run = runs / "from-ui"
            state = lambda: browser.find_element("id", "run-state").get_attribute("data-state")  # noqa: E731
            assert wait_until(lambda: state() == "running", 120), _text(browser, "#train-log")
            assert json.loads((run / "ui_process.json").read_text())["pid"] > 0
            assert wait_until(lambda: any("loss" in r for r in read_metrics(run / "metrics.jsonl")), 120)
            seen = _watch_the_loss_curve_grow(browser, base + "/runs/from-ui")
            browser.find_element("id", "stop-new").click()
            assert wait_until(lambda: state() == "stopped", 60), _text(browser, "#train-log")
            logged = [r for r in read_metrics(run / "metrics.jsonl") if "loss" in r]
            browser.switch_to.window(browser.window_handles[-1])      # the run page, open all along
            points = lambda: int(browser.find_element("css selector", LOSS_PLOT).get_attribute("data-points"))  # noqa: E731
            assert wait_until(lambda: points() == len(logged), 5), (points(), len(logged), seen)  # one per logged step
            assert browser.execute_script("return window.sameDocument") is True       # never reloaded
            browser.close()
            browser.switch_to.window(browser.window_handles[0])
            assert f"resume with lmtune train {run / 'config.yaml'} --resume" in _text(browser, "#run-state")
            assert "resume with:" in _text(browser, "#train-log")      # train's own Ctrl-C message

            browser.get(base + "/runs/from-ui")
            plot = '.plot[data-key="tokens_per_second"]'
            assert wait_until(lambda: int(browser.find_element("css selector", plot).get_attribute("data-points")) > 0, 10)
            browser.find_element("id", "resume-run").click()
            assert wait_until(lambda: "running" == _text(browser, "#status .state"), 60)
        finally:
            for proc in app.state.launcher.procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(30)


def test_read_only_hides_and_refuses_every_action(browser, tmp_path_factory):
    from ui_runs import age, runs_dir_of, unfinished

    runs = runs_dir_of(tmp_path_factory, "read_only_runs")
    age(unfinished(runs / "gentle", checkpoint_step=1), 3600)       # stopped: resumable
    (runs / "uploads").mkdir(parents=True)
    with ThreadedServer(create_app(runs)) as base:
        browser.get(base + "/runs/gentle")
        assert browser.find_element("id", "resume-run").is_displayed()
    with ThreadedServer(create_app(runs, read_only=True)) as base:
        browser.get(base + "/runs/gentle")
        assert "stopped" in _text(browser, "#status") and not browser.find_elements("id", "resume-run")
        browser.get(base + "/new")
        assert browser.find_elements("id", "read-only") and not browser.find_elements("id", "start")
        assert not browser.find_elements("id", "upload")
        for path, body in (("/api/upload?name=x.jsonl", b"{}\n"), ("/api/new/start", b'{"name": "r"}'),
                           ("/api/runs/r/stop", b""), ("/api/runs/r/resume", b"")):
            status, answer = _post(base + path, body)
            assert status == 403 and "read-only" in answer["error"], path
    assert list((runs / "uploads").iterdir()) == []


def test_upload_cap_and_the_action_header(browser, tmp_path):
    """Past the cap an upload is refused and leaves no file, with or without a Content-Length; an
    action without the X-Lmtune-UI header (a form on another site) is refused."""
    runs = tmp_path / "runs"
    runs.mkdir()
    big = tmp_path / "big.jsonl"
    big.write_text('{"text": "x"}\n' * 200)
    with ThreadedServer(create_app(runs, max_upload=1000)) as base:
        browser.get(base + "/new")
        browser.find_element("id", "upload").send_keys(str(big))
        assert wait_until(lambda: "at most 1,000" in _text(browser, "#upload-note"), 10)
        req = urllib.request.Request(base + "/api/upload?name=big.jsonl", method="POST", headers={"X-Lmtune-UI": "1"},
                                     data=iter([b"x" * 600, b"x" * 600]))     # chunked: no Content-Length
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=30)
        assert err.value.code == 413
        status, answer = _post(base + "/api/upload?name=ok.jsonl", b'{"text": "x"}\n', header=False)
        assert status == 403 and "X-Lmtune-UI" in answer["error"].replace("x-lmtune-ui", "X-Lmtune-UI")
    assert [p.name for p in (runs / "uploads").iterdir()] == []
