"""report.html: written from a real trained run, self-contained, torch-free, and rendered by a real
headless browser (Debian's chromium) with every plot loaded and visible."""

from __future__ import annotations

import json
import re
from html import escape as html_escape
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lmtune.cli import main
from lmtune.report.build import REPORT_FILE, load_run, write_report
from test_compare import fabricate_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1200, 2400)
# Appended to a copy of the report (the report itself has no script): once every image has
# loaded or failed, record how many decoded and where they sit on the page.
PROBE_SCRIPT = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  var rects = imgs.map(function (i) { var r = i.getBoundingClientRect();
    return [Math.round(r.left), Math.round(r.top), Math.round(r.width), Math.round(r.height)]; });
  document.body.setAttribute('data-images', ok.length + '/' + imgs.length);
  document.body.setAttribute('data-rects', JSON.stringify(rects));
});
</script>"""


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    from eval_runs import trained_runs

    runs = trained_runs(tmp_path_factory)
    run = shutil.copytree(runs["gentle"], tmp_path_factory.mktemp("report") / "gentle")
    assert main(["report", str(run)]) == 0
    return run / REPORT_FILE


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_report_of_a_real_run_has_every_section(real_report):
    html = real_report.read_text()
    for heading in ("Training curves", "Evaluation: base vs tuned", "Forgetting check", "Samples",
                    "Data", "Configuration", "Time, memory, environment"):
        assert f"<h2>{heading}</h2>" in html
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 2                                   # curves; base-vs-tuned bars + probe
    assert 'class="badge ok"' in html and "execution_accuracy (primary)" in html
    assert "http://" not in html and "https://" not in html  # nothing to fetch: readable offline
    ev = json.loads((real_report.parent / "eval.json").read_text())
    assert html_escape(ev["samples"][0]["reference"]) in html


def test_report_without_eval_or_metrics_still_renders(tmp_path):
    run = fabricate_run(tmp_path / "run", "lora", metric=None, metrics_rows=0)
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')   # torn last line
    html = write_report(run).read_text()
    assert "Not evaluated yet" in html and "1 logged training steps" in html
    assert load_run(run).metrics == [{"step": 1, "loss": 2.0}]


def test_report_escapes_run_text(tmp_path):
    run = fabricate_run(tmp_path / "run", "qlora")
    html = write_report(run).read_text()
    assert "&lt;b&gt;Oslo&lt;/b&gt;" in html and "<b>Oslo</b>" not in html
    assert 'class="badge ok"' in html and "quant.type" in html   # qlora rows in the config table


def test_report_and_compare_need_no_torch(tmp_path):
    run = fabricate_run(tmp_path / "run", "full", ratio=5.0)
    code = ("import sys; from lmtune.cli import main; "
            f"assert main(['report', {str(run)!r}]) == 0; assert main(['compare', {str(run)!r}]) == 0; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert 'class="badge forgotten"' in (run / REPORT_FILE).read_text()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_report_renders_in_a_real_browser(real_report, tmp_path):
    from PIL import Image, ImageStat

    probe = tmp_path / "probe.html"
    probe.write_text(real_report.read_text().replace("</body>", PROBE_SCRIPT + "\n</body>"))
    dom = _chromium("--virtual-time-budget=10000", "--dump-dom", probe.as_uri(), profile=tmp_path / "p1")
    marker = re.search(r'data-images="(\d+)/(\d+)"', dom.stdout)
    assert marker, f"no marker in the DOM dump; stderr: {dom.stderr[-800:]}"
    loaded, total = map(int, marker.groups())
    assert total == 2 and loaded == total, f"{loaded} of {total} images loaded"
    rects = json.loads(re.search(r"data-rects=\"([^\"]+)\"", dom.stdout).group(1).replace("&quot;", '"'))

    shot = tmp_path / "shot.png"
    done = _chromium(f"--screenshot={shot}", real_report.as_uri(), profile=tmp_path / "p2")
    assert shot.is_file(), done.stderr[-800:]
    page = Image.open(shot).convert("RGB")
    assert page.size == WINDOW
    gray = page.convert("L")
    assert ImageStat.Stat(gray).stddev[0] > 20                  # not a blank page
    x, y, w, h = rects[0]                                       # the training-curves plot
    assert w > 400 and h > 150 and y + h <= WINDOW[1]
    plot = page.crop((x, y, x + w, y + h))
    colours = plot.getcolors(maxcolors=1 << 16)
    assert colours is None or len(colours) > 50                 # lines, labels, antialiasing
    assert ImageStat.Stat(plot.convert("L")).stddev[0] > 10
