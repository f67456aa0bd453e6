"""What verifying a data cache entry costs on use (lmtune/data/cache.py), against what a cache hit
costs anyway, on synthetic alpaca files of N records (data_scale.py's generator) and the embedded
`tiny` tokenizer.

For each size: build the entry once (train's preparation), then time, in this process, each way
of checking it and the hit itself, best of --repeat (the entry's files are in the page cache, as
on a rerun soon after a build):

    key        cache.data_key: hashing the data files (every hit pays this already)
    sizes      stat of every file against meta.json (a truncated or missing file)
    sampled    sizes + blake2b of the first and last MiB of every file
    full       cache.verify: sizes + a hash of every byte (what lmtune does)
    blake2b, sha256   reading and hashing every byte with each (the choice of hash)
    hit        prepare_arrow on a hit: key + verify + loading the memory-mapped datasets

    PYTHONPATH=src python benchmarks/cache_verify.py --sizes 10000,100000 --work /tmp/cv

Prints one JSON line per size and a markdown table: seconds and the full check's share of a hit.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data_scale import synthetic_alpaca  # noqa: E402


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def sampled(entry: Path) -> None:
    from lmtune.data import cache

    meta = json.loads((entry / cache.META).read_text())
    for name, (size, _) in meta["files"].items():
        path = entry / name
        assert path.stat().st_size == size
        h = hashlib.blake2b(digest_size=16)
        with path.open("rb") as f:
            h.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            h.update(f.read(1 << 20))


def hash_all(entry: Path, algo: str) -> None:
    """Every byte of every file, as cache.verify reads it, with another hash."""
    from lmtune.data import cache

    meta = json.loads((entry / cache.META).read_text())
    for name in meta["files"]:
        h = hashlib.blake2b(digest_size=16) if algo == "blake2b" else hashlib.new(algo)
        with (entry / name).open("rb") as f:
            while block := f.read(8 << 20):
                h.update(block)


def sizes_only(entry: Path) -> None:
    from lmtune.data import cache

    meta = json.loads((entry / cache.META).read_text())
    assert all((entry / name).stat().st_size == size for name, (size, _) in meta["files"].items())


def measure(n: int, work: Path, repeat: int) -> dict:
    from lmtune.config import from_dict
    from lmtune.data import cache
    from lmtune.data.arrow_pipeline import prepare_arrow
    from lmtune.models import load_tokenizer

    os.environ["LMTUNE_CACHE_DIR"] = str(work / f"cache-{n}")
    data = work / f"alpaca-{n}.jsonl"
    if not data.exists():
        synthetic_alpaca(data, n)
    cfg = from_dict({"model": {"name_or_path": "tiny"}, "data": {"train": [str(data)]}})
    tok = load_tokenizer(cfg.model.name_or_path, cfg.model)
    t0 = time.perf_counter()
    prepare_arrow(cfg.data, tok)
    build = time.perf_counter() - t0
    [entry] = cache.entries()
    files = {"train": [str(data)], "validation": [], "test": []}
    key = cache.data_key(cfg.data, files, tok, None)
    devnull = open(os.devnull, "w")
    stderr, sys.stderr = sys.stderr, devnull
    try:
        row = {
            "records": n, "entry_mb": round(cache.size_bytes(entry) / 1e6, 1),
            "data_mb": round(data.stat().st_size / 1e6, 1), "build_s": round(build, 2),
            "key_s": best(lambda: cache.data_key(cfg.data, files, tok, None), repeat),
            "sizes_s": best(lambda: sizes_only(entry), repeat),
            "sampled_s": best(lambda: sampled(entry), repeat),
            "full_s": best(lambda: cache.verify(entry, key), repeat),
            "blake2b_s": best(lambda: hash_all(entry, "blake2b"), repeat),
            "sha256_s": best(lambda: hash_all(entry, "sha256"), repeat),
            "hit_s": best(lambda: prepare_arrow(cfg.data, tok), repeat),
        }
    finally:
        sys.stderr = stderr
    row = {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}
    row["full_share_of_hit"] = round(row["full_s"] / row["hit_s"], 3)
    row["load_avg"] = round(os.getloadavg()[0], 2)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--work", default="/tmp/lmtune-cache-verify")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        rows.append(measure(n, work, args.repeat))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| records | entry MB | data MB | key s | sizes s | sampled s | full s | blake2b s | sha256 s | hit s "
          "| full / hit | load |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['records']:,} | {r['entry_mb']} | {r['data_mb']} | {r['key_s']} | {r['sizes_s']} | "
              f"{r['sampled_s']} | {r['full_s']} | {r['blake2b_s']} | {r['sha256_s']} | {r['hit_s']} | "
              f"{r['full_share_of_hit']:.0%} | {r['load_avg']} |")


if __name__ == "__main__":
    main()
