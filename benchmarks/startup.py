"""Start-up cost of the CLI, and which commands import torch.

    .venv/bin/python benchmarks/startup.py            # 5 timed runs of each, JSON lines + a table

For `lmtune --help` the whole process is timed as a user sees it (the installed `lmtune` script:
interpreter start, imports, argparse, printing), next to `python -c pass` for the interpreter alone.
Every command that needs no model runs in a fresh interpreter that reports which heavy modules it
imported (torch, transformers, peft, trl, datasets, bitsandbytes); the issue's rule is that those
commands import no torch. The tests/config/test_config.py test guards `--help`; this gives the numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SQL = REPO / "src" / "lmtune" / "assets" / "tasks" / "sql"
HEAVY = ("torch", "transformers", "peft", "trl", "datasets", "bitsandbytes", "accelerate", "matplotlib")

# (label, argv) of commands that need no model weights
COMMANDS = [
    ("--help", ["--help"]),
    ("--version", ["--version"]),
    ("train --help", ["train", "--help"]),
    ("config show", ["config", "show", "data.task=sql"]),
    ("config show --explain", ["config", "show", "--explain"]),
    ("data check (no model)", ["data", "check", str(SQL / "train.jsonl")]),
    ("estimate llama-3.1-8b lora", ["estimate", "--model", "llama-3.1-8b", "--method", "lora"]),
    ("estimate --list", ["estimate", "--list"]),
    ("advise --list-questions", ["advise", "--list-questions"]),
]

PROBE = """
import sys, time, json, io, contextlib
t0 = time.perf_counter()
from lmtune.cli import main
out = io.StringIO()
try:
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        rc = main(json.loads(sys.argv[1]))
except SystemExit as e:
    rc = e.code if isinstance(e.code, int) else 0
heavy = {m: m in sys.modules for m in json.loads(sys.argv[2])}
print(json.dumps({"rc": rc, "in_process_s": round(time.perf_counter() - t0, 3), "imported": heavy}))
"""


def timed(cmd: list[str], runs: int, env: dict) -> list[float]:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, env=env, check=False)
        times.append(time.perf_counter() - t)
    return times


def probe(argv: list[str], env: dict, cwd: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)],
                          capture_output=True, text=True, env=env, cwd=cwd, check=False)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {"rc": proc.returncode, "error": proc.stderr.strip().splitlines()[-1:]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="lmtune CLI start-up time and torch-free commands")
    p.add_argument("--runs", type=int, default=5)
    args = p.parse_args(argv)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    script = Path(sys.executable).with_name("lmtune")
    rows = []
    base = timed([sys.executable, "-c", "pass"], args.runs, env)
    help_t = timed([str(script), "--help"], args.runs, env)
    for label, times in (("python -c pass", base), ("lmtune --help (whole process)", help_t)):
        row = {"case": label, "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
               "runs": args.runs}
        rows.append(row)
        print(json.dumps(row), flush=True)
    failures = []
    with tempfile.TemporaryDirectory() as cwd:  # commands that write files write them here
        for label, cmd in COMMANDS:
            t = time.perf_counter()
            res = probe(cmd, env, cwd)
            row = {"case": f"lmtune {label}", "process_s": round(time.perf_counter() - t, 3), **res}
            rows.append(row)
            print(json.dumps(row), flush=True)
            if res.get("imported", {}).get("torch", True):
                failures.append(label)
    print("\n| case | time (s) | rc | heavy modules imported |\n|---|---|---|---|")
    for r in rows:
        heavy = ", ".join(m for m, on in r.get("imported", {}).items() if on) or ("-" if "imported" in r else "")
        t = r.get("median_s", r.get("process_s"))
        print(f"| {r['case']} | {t} | {r.get('rc', '')} | {heavy} |")
    if failures:
        print(f"\ncommands that imported torch: {', '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
