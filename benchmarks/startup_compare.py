"""Start-up of the CLI in several source trees, interleaved (a shared machine's load hits all alike).

    git archive OLD src configs examples | tar -x -C /tmp/old
    .venv/bin/python benchmarks/startup_compare.py old=/tmp/old new=.      # 10 rounds

Each round runs every command once per tree in a fresh `python -m lmtune` with PYTHONPATH=TREE/src;
prints the median wall seconds and the median CPU seconds (user + sys of the child). On a loaded
machine the CPU seconds are the number to compare; the wall times only on an idle one.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

COMMANDS = ["--help", "config show configs/tiny-sql-lora.yaml", "config show --explain",
            "data check examples/data/chat.jsonl",
            "train data.task=sql model.name_or_path=/nonexistent output.dir=/tmp/lmtune-startup-never"]


def run_once(root: Path, argv: list[str]) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "HF_HUB_OFFLINE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lmtune", *argv], cwd=root, env=env, capture_output=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("trees", nargs="+", metavar="NAME=DIR")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    trees = {name: Path(path).resolve() for name, path in (t.split("=", 1) for t in args.trees)}
    print("| command | " + " | ".join(f"{n} wall / CPU (s)" for n in trees) + " |")
    print("|---|" + "---|" * len(trees))
    for command in COMMANDS:
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for _ in range(args.rounds):
            for name, root in trees.items():
                times[name].append(run_once(root, command.split()))
        cells = [f"{statistics.median(w for w, _ in t):.3f} / {statistics.median(c for _, c in t):.3f}"
                 for t in times.values()]
        print(f"| lmtune {command} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
