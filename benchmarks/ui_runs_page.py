"""`lmtune ui`'s runs page with many runs: does it load in under a second with 200?

    .venv/bin/python benchmarks/ui_runs_page.py                 # trains one tiny run first (~1 min)
    .venv/bin/python benchmarks/ui_runs_page.py --run runs/x    # copies an existing run instead

One real run (the embedded `tiny` base, the bundled SQL task, 4 steps, with train's final
evaluation) is copied 200 times: its small files only (config, stats, metrics.jsonl, summary,
eval.json; no weights, which the page never reads). Measured, 5 times each, with the reference in
the same invocation: the server's time for GET / (in-process TestClient) with 200 runs and with 2,
cold (the first request parses every config.yaml; `lmtune ui` does that once before it listens) and
warm (the median of the next ones: parses are kept until a file changes), and the page in Debian's
headless chromium (selenium, system chromedriver): navigation start to the load event, with 200
runs and with 2. Results: a JSON line appended to benchmarks/results/ui.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SMALL_FILES = ("config.yaml", "data_stats.json", "template.json", "env.json", "metrics.jsonl",
               "train_summary.json", "eval.json", "lmtune_output.json")


def train_tiny(where: Path) -> Path:
    run = where / "tiny-sql"
    subprocess.run([sys.executable, "-m", "lmtune", "train", "data.task=sql", "method=lora", "train.max_steps=4",
                    "train.logging_steps=1", "eval.num_samples=4", "eval.max_new_tokens=16", "output.report=false",
                    f"output.dir={run}"], check=True, capture_output=True)
    return run


def fill(runs_dir: Path, source: Path, count: int) -> None:
    for i in range(count):
        dest = runs_dir / f"run-{i:03d}"
        dest.mkdir(parents=True)
        for name in SMALL_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, dest / name)


def server_times(runs_dir: Path, repeats: int) -> list[float]:
    from fastapi.testclient import TestClient

    from lmtune.ui.app import create_app

    client = TestClient(create_app(runs_dir), base_url="http://127.0.0.1")
    t = time.perf_counter()
    client.get("/")   # cold: every config.yaml parsed (`lmtune ui` does this once before it listens)
    times = [time.perf_counter() - t]
    for _ in range(repeats):
        t = time.perf_counter()
        assert client.get("/").status_code == 200
        times.append(time.perf_counter() - t)
    return times


def browser_times(runs_dir: Path, repeats: int) -> list[float]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from lmtune.serve.server import ThreadedServer
    from lmtune.ui.app import create_app

    os.environ["SE_OFFLINE"] = "true"
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1300,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=opts)
    times = []
    try:
        with ThreadedServer(create_app(runs_dir)) as url:
            driver.get(url + "/")
            for _ in range(repeats):
                driver.get(url + "/")
                nav = driver.execute_script("return performance.getEntriesByType('navigation')[0].toJSON()")
                times.append((nav["loadEventEnd"] - nav["startTime"]) / 1000)
                rows = driver.execute_script("return document.querySelectorAll('#runs tbody tr').length")
                assert rows == len(list(runs_dir.iterdir())), rows
    finally:
        driver.quit()
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a run directory to copy (default: train a tiny one)")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "ui.jsonl")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ui-bench-") as tmp:
        source = args.run or train_tiny(Path(tmp))
        many, few = Path(tmp) / "many", Path(tmp) / "few"
        fill(many, source, args.count)
        fill(few, source, 2)
        result = {"bench": "ui_runs_page", "runs": args.count, "repeats": args.repeats}
        for label, runs_dir in ((f"{args.count}", many), ("2", few)):
            cold, *warm = server_times(runs_dir, args.repeats)
            result[f"server_cold_s_{label}"] = round(cold, 4)
            result[f"server_s_{label}"] = round(statistics.median(warm), 4)
            result[f"browser_load_s_{label}"] = round(statistics.median(browser_times(runs_dir, args.repeats)), 4)
    result["browser_ratio"] = round(result[f"browser_load_s_{args.count}"] / result["browser_load_s_2"], 2)
    print(json.dumps(result))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
