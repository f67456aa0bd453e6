"""How the cost of data preparation grows with the data: `lmtune data check --model tiny` and the
preparation `lmtune train` runs before its first step (lmtune.data.prepare.prepare_datasets: load,
validate, dedupe, split, template, tokenize), on synthetic alpaca files of N short records.

Each measurement runs in a fresh process under its own helper, which reads the wall time and the
peak RSS (ru_maxrss of its only child), so imports count the same for every size. `prepare` starts
from an empty data cache (its own, under --work); `rerun` prepares again with that cache (a hit).
Every row records the 1-minute load average before and after (the machine may be shared).

    nice python benchmarks/data_scale.py --sizes 10000,100000           # ~ minutes on 2 idle cores
    python benchmarks/data_scale.py --sizes 1000 --what check            # smoke

Prints one JSON line per (what, size) and a markdown table with the cost per 10k records.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

WORDS = ("customer order product city year total price name list count show average table "
         "report status date amount record value first last number store region month").split()


def synthetic_alpaca(path: Path, n: int, seed: int = 0) -> Path:
    """N unique short alpaca records (~40 tokens each): instruction, sometimes an input, an output."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10)))
            row = {"instruction": f"Task {i}: {words}.",
                   "input": " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 6))),
                   "output": " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))}
            f.write(json.dumps(row) + "\n")
    return path


PREPARE = """
import sys, time
from lmtune.config import from_dict
from lmtune.data.prepare import prepare_datasets
from lmtune.models import load_tokenizer
t0 = time.time()
cfg = from_dict({"model": {"name_or_path": "tiny"}, "data": {"train": [sys.argv[1]]}})
tok = load_tokenizer(cfg.model.name_or_path, cfg.model)
data = prepare_datasets(cfg.data, tok)
print("rows", len(data.train), "seconds_in_process", round(time.time() - t0, 2))
"""


def run(what: str, path: Path, env: dict) -> dict:
    import shutil

    cache = Path(env["LMTUNE_CACHE_DIR"])
    if what == "prepare" and cache.is_dir():   # the benchmark's own directory: start cold
        shutil.rmtree(cache)
    if what == "check":
        cmd = [sys.executable, "-m", "lmtune", "data", "check", str(path), "--model", "tiny", "--samples", "0"]
    else:
        cmd = [sys.executable, "-c", PREPARE, str(path)]
    load_before = round(os.getloadavg()[0], 2)
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sampler = TreeMemory(proc.pid)
    out, err = proc.communicate()
    wall = time.time() - t0
    sampler.stop()
    usage = proc_usage_after(proc)
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"rc": proc.returncode, "wall_s": round(wall, 2), "peak_rss_mb": usage,
            "peak_tree_pss_mb": round(sampler.peak / 1024, 1), "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
            "load_before": load_before, "load_after": round(os.getloadavg()[0], 2),
            "last_line": ((out if proc.returncode == 0 else err).strip().splitlines() or [""])[-1][:200]}


class TreeMemory:
    """Samples (every 0.25 s) the summed PSS of the measured process and all its descendants (the
    pipeline's worker processes): ru_maxrss is one process's peak, PSS counts shared pages once."""

    def __init__(self, pid: int):
        import threading

        self.pid, self.peak, self.done = pid, 0, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self.done.wait(0.25):
            self.peak = max(self.peak, sum(_pss_kb(p) for p in _tree(self.pid)))

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def _tree(root: int) -> list[int]:
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = [root], [root]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier]
        out += frontier
    return out


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_usage_after(proc) -> float:
    """Peak RSS (MB) of the reaped child: RUSAGE_CHILDREN's maximum only grows, so each measurement
    runs under its own helper process (main), whose only child is the measured command."""
    import resource

    del proc
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def helper_main(what: str, path: str) -> None:
    """Runs in its own process: one measurement, so RUSAGE_CHILDREN holds only this child."""
    cache = Path(path).parent / f"cache-{Path(path).stem}"
    src = os.environ.get("DATA_SCALE_SRC") or str(SRC)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", LMTUNE_CACHE_DIR=str(cache),
               PYTHONPATH=os.pathsep.join(x for x in (src, os.environ.get("PYTHONPATH")) if x))
    print(json.dumps(run(what, Path(path), env)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="10000,100000")
    p.add_argument("--what", default="check,prepare,rerun",
                   help="check, prepare (cold cache), rerun (prepare again: a cache hit), comma-separated")
    p.add_argument("--label", default="arrow pipeline", help="written to each row")
    p.add_argument("--src", default=str(SRC), help="the lmtune source tree to measure (e.g. another "
                                                   "checkout's src, for a before/after in one run)")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "lmtune-data-scale"))
    p.add_argument("--out", default=str(HERE / "results" / "data_scale.jsonl"))
    p.add_argument("--helper", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.helper:
        helper_main(*args.helper)
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        path = work / f"alpaca-{n}.jsonl"
        if not path.is_file():
            synthetic_alpaca(path, n)
        for what in args.what.split(","):
            proc = subprocess.run([sys.executable, __file__, "--helper", what, str(path)],
                                  capture_output=True, text=True, env=dict(os.environ, DATA_SCALE_SRC=args.src))
            row = {"what": what, "records": n, "mb": round(path.stat().st_size / 1e6, 1), "label": args.label,
                   **json.loads(proc.stdout.strip().splitlines()[-1])}
            rows.append(row)
            print(json.dumps(row), flush=True)
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
    print("\n| label | what | records | MB | wall s | CPU s | s per 10k records | peak RSS MB (one process) "
          "| peak PSS MB (all processes) | load before/after |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['label']} | {r['what']} | {r['records']:,} | {r['mb']} | {r['wall_s']} | {r['cpu_s']} | "
              f"{10000 * r['wall_s'] / r['records']:.2f} | {r['peak_rss_mb']} | {r['peak_tree_pss_mb']} | "
              f"{r['load_before']} / {r['load_after']} |")
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
