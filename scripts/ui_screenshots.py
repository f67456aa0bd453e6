"""Screenshots of `lmtune ui`'s pages for docs/ui.md, taken in Debian's headless chromium.

    .venv/bin/python scripts/ui_screenshots.py [RUNS_DIR]    # default: trains two tiny runs first

Writes docs/img/ui-runs.png, ui-run.png and ui-compare.png (the first two runs by name).
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
    finally:
        driver.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
