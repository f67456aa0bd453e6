"""Screenshots of `lmtune ui`'s pages for docs/ui.md, taken in Debian's headless chromium.

    .venv/bin/python scripts/ui_screenshots.py [RUNS_DIR]    # default: trains two tiny runs first

Writes docs/img/ui-runs.png, ui-run.png and ui-compare.png (the first two runs by name), ui-chat.png
(the first run beside the second run's base) and ui-new.png (/new after `data check` and `advise` on
40 lines of the bundled SQL task, copied to RUNS_DIR/uploads).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMON = ["data.task=sql", "train.max_steps=12", "train.logging_steps=1", "train.eval_steps=3",
          "eval.num_samples=4", "eval.max_new_tokens=24", "output.report=true"]


def train_two(root: Path) -> Path:
    for name, method in (("sql-lora", "lora"), ("sql-full", "full")):
        subprocess.run([sys.executable, "-m", "lmtune", "train", f"method={method}", *COMMON,
                        f"output.dir={root / name}"], check=True, capture_output=True)
    return root


def main() -> int:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from lmtune.serve.server import ThreadedServer
    from lmtune.ui.app import create_app
    from lmtune.ui.runs import list_runs

    runs_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else train_two(Path(tempfile.mkdtemp(prefix="ui-shots-")))
    names = list_runs(runs_dir)[:2]
    os.environ["SE_OFFLINE"] = "true"
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,860"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=opts)
    out = REPO / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    try:
        with ThreadedServer(create_app(runs_dir)) as url:
            for shot, path in (("ui-runs", "/"), ("ui-run", f"/runs/{names[0]}"),
                               ("ui-compare", f"/compare?runs={','.join(names)}")):
                driver.get(url + path)
                time.sleep(2.5)   # two polls of the curves
                driver.save_screenshot(str(out / f"{shot}.png"))
                print(out / f"{shot}.png")
            chat(driver, url, names, out / "ui-chat.png")
            new(driver, url, runs_dir, out / "ui-new.png")
    finally:
        driver.quit()
    return 0


def wait_for(driver, css: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not driver.find_elements("css selector", css) and time.monotonic() < deadline:
        time.sleep(0.2)


def chat(driver, url: str, names: list[str], path: Path) -> None:
    from selenium.webdriver.support.ui import Select

    driver.get(url + "/chat")
    Select(driver.find_element("id", "model-a")).select_by_value(f"run:{names[0]}")
    Select(driver.find_element("id", "model-b")).select_by_value(f"base:{names[-1]}")
    driver.find_element("id", "max-tokens").clear()
    driver.find_element("id", "max-tokens").send_keys("40")
    driver.find_element("id", "chat-input").send_keys("Which customers live in Cairo?")
    driver.find_element("id", "send").click()
    for pane in "ab":
        wait_for(driver, f'#transcript-{pane} .msg.assistant[data-done="1"]')
    driver.save_screenshot(str(path))
    print(path)


def new(driver, url: str, runs_dir: Path, path: Path) -> None:
    from lmtune.tasks import task_files

    upload = runs_dir / "uploads" / "sql-40.jsonl"
    upload.parent.mkdir(exist_ok=True)
    upload.write_text("".join(task_files("sql")["train"].read_text().splitlines(keepends=True)[:40]))
    driver.set_window_size(1280, 1500)
    driver.get(url + "/new")
    driver.find_element("id", "run-name").clear()
    driver.find_element("id", "run-name").send_keys("sql-from-ui")
    driver.find_element("id", "data-path").send_keys(str(upload))
    driver.find_element("id", "inspect").click()
    deadline = time.monotonic() + 180
    while driver.find_element("id", "inspect-note").text not in ("done", "see the problems below") \
            and time.monotonic() < deadline:
        time.sleep(0.3)
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 860)
    print(path)


if __name__ == "__main__":
    sys.exit(main())
