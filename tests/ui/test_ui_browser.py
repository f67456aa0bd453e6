"""`lmtune ui` in a real browser (Debian's chromium, selenium, the system chromedriver) against
real trained runs: the runs page, a curve that grows while metrics.jsonl does, the compare page's
numbers against `lmtune compare`'s, and a refused path. Skipped, with the reason, without chromium,
its driver or selenium."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from browser import skip_reason, wait_until
from lmtune.report import html as H
from lmtune.report.build import read_metrics
from lmtune.report.compare import compare
from lmtune.serve.server import ThreadedServer
from lmtune.ui.app import create_app
from ui_runs import age, append_metric, runs_dir_of, unfinished

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return runs_dir_of(tmp_path_factory, "browser_runs")


@pytest.fixture(scope="module")
def url(runs):
    with ThreadedServer(create_app(runs)) as base:
        yield base


def _table(browser, table_id: str) -> list[list[str]]:
    from selenium.webdriver.common.by import By

    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in browser.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")]


def test_runs_page_lists_both_runs_with_their_metrics(browser, url, runs):
    from selenium.webdriver.common.by import By

    browser.get(url + "/")
    rows = {r[1]: r for r in _table(browser, "runs")}
    assert set(rows) == {"gentle", "harsh"}
    for row in compare([runs / "gentle", runs / "harsh"])[0]:
        shown = rows[row.run]
        assert shown[2] == "finished" and shown[3] == row.method
        assert H.fmt_pct(row.value) in shown[8] and H.fmt_pct(row.base_value) in shown[8]
        assert shown[9].startswith(row.forgetting)
    name_header = browser.find_elements(By.CSS_SELECTOR, "#runs th")[1]
    name_header.click()
    assert [r[1] for r in _table(browser, "runs")] == ["gentle", "harsh"]
    name_header.click()
    assert [r[1] for r in _table(browser, "runs")] == ["harsh", "gentle"]


def test_curve_gains_a_point_within_two_seconds_of_a_new_line(browser, tmp_path_factory):
    """A run in progress (no train_summary.json yet): the page follows metrics.jsonl without reload."""
    root = runs_dir_of(tmp_path_factory, "browser_live")
    run = unfinished(root / "harsh", checkpoint_step=None)
    step = max(r["step"] for r in read_metrics(run / "metrics.jsonl"))
    plot = '.plot[data-key="loss"]'
    with ThreadedServer(create_app(root)) as base:
        browser.get(base + "/runs/harsh")
        count = lambda: int(browser.find_element("css selector", plot).get_attribute("data-points"))  # noqa: E731
        before = wait_until(count, 10)
        assert before > 0 and "running" in browser.find_element("css selector", ".state").text
        append_metric(run, {"step": step + 1, "loss": 0.123, "learning_rate": 1e-5})
        appended = time.monotonic()
        assert wait_until(lambda: count() == before + 1, 2.0), "the loss curve did not grow within 2 s"
        print(f"curve grew {time.monotonic() - appended:.2f} s after the line was appended")
        assert wait_until(lambda: browser.find_element("id", "steps").text == str(step + 1), 2.0)


def test_compare_page_numbers_equal_lmtune_compare(browser, url, runs):
    from selenium.webdriver.common.by import By

    browser.get(url + "/compare?runs=gentle,harsh")
    printed = subprocess.run([sys.executable, "-m", "lmtune", "compare", str(runs / "gentle"), str(runs / "harsh")],
                             capture_output=True, text=True, timeout=120, check=True).stdout
    lines = {line.split()[0]: line for line in printed.splitlines()[2:] if line and not line.startswith("note")}
    shown = _table(browser, "compare")
    assert {row[0] for row in shown} == {"gentle", "harsh"}
    for row in shown:
        for cell in row:
            assert cell in lines[row[0]], f"{cell!r} is not in `lmtune compare`'s line {lines[row[0]]!r}"
    polylines = wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, '.plot[data-key="loss"] polyline'), 10)
    assert {p.get_attribute("data-series") for p in polylines} == {"gentle", "harsh"}


def test_a_path_out_of_runs_dir_is_refused(browser, url):
    """Chromium resolves /runs/%2e%2e itself (to /), so the names that reach the server are these."""
    browser.get(url + "/compare?runs=gentle,..")
    assert "no run named '..'" in browser.page_source
    browser.get(url + "/runs/..%2F..%2Fetc%2Fpasswd")     # a name may hold one / (SWEEP/TRIAL): checked, 404
    assert "no run named '../../etc/passwd'" in browser.page_source and "root:" not in browser.page_source
    browser.get(url + "/api/runs/..%2Fbrowser_runs0/metrics")
    assert "no run named '../browser_runs0'" in browser.page_source and '"rows"' not in browser.page_source


def test_stopped_run_shows_its_resume_command(browser, tmp_path_factory):
    root = runs_dir_of(tmp_path_factory, "browser_stopped")
    run = unfinished(root / "gentle", checkpoint_step=1)
    age(run, 3600)
    with ThreadedServer(create_app(root)) as base:
        browser.get(base + "/")
        rows = {r[1]: r for r in _table(browser, "runs")}
    assert rows["gentle"][2] == f"stopped\nlmtune train {run / 'config.yaml'} --resume"
    assert rows["harsh"][2] == "finished"


def test_token_in_the_address_opens_every_page(browser, runs):
    with ThreadedServer(create_app(runs, token="t0ken", allowed_hosts=["*"])) as base:
        browser.get(base + "/runs/gentle")
        assert "needs its token" in browser.page_source
        browser.get(base + "/?token=t0ken")
        browser.get(base + "/runs/gentle")     # the cookie carries the token, the page's fetches too
        assert wait_until(lambda: int(browser.find_element("css selector", '.plot[data-key="loss"]')
                                 .get_attribute("data-points")) > 0, 10)
