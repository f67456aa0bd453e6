"""Build every bundled task file from one seed (called by scripts/build_tasks.py; this package is
build-time only, see scripts/task_gen/__init__.py).

    <out>/sql/db.sqlite, <out>/sql/{train,validation,test}.jsonl     alpaca records
    <out>/json/{train,validation,test}.jsonl                         chat `messages` records
    <out>/general/probe.jsonl                                        {"text": ...} passages
    <out>/catalogue/{docs_v1,docs_v2,train,validation,test}.jsonl    docs {"id", "text"}; chat records
    <out>/manifest.json                                              seed, counts, sha256 of jsonl

Same seed -> the same bytes (jsonl and manifest; the database holds the same rows, and the same
bytes too as long as the SQLite library version is the same, since SQLite stamps it in the header).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

from task_gen import catalogue_gen, json_gen, probe_gen, sql_db, sql_gen

DEFAULT_SEED = 20261128
SPLITS = {"test": 200, "validation": 200, "train": 2000}  # test first: stable if train grows


def _rng(seed: int, name: str) -> random.Random:
    # str seeds are hashed with SHA-512 by `random`, independent of PYTHONHASHSEED
    return random.Random(f"{seed}:{name}")


def write_jsonl(path: Path, records: list[dict]) -> str:
    """Write atomically (temp + rename); return the sha256 of the bytes written."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return hashlib.sha256(data).hexdigest()


def split(records: list[dict], rng: random.Random) -> dict[str, list[dict]]:
    """Shuffle the (deduplicated) records and cut them into SPLITS. The shuffle matters: the
    generator finds the examples of small templates first, which would crowd the first slice."""
    records = list(records)
    rng.shuffle(records)
    out, start = {}, 0
    for name, size in SPLITS.items():
        out[name] = records[start:start + size]
        start += size
    return {k: out[k] for k in ("train", "validation", "test")}


def build_all(out_dir: Path, seed: int = DEFAULT_SEED) -> dict:
    out_dir = Path(out_dir)
    total = sum(SPLITS.values())
    files: dict[str, dict] = {}

    rows = sql_db.build_db(out_dir / "sql" / "db.sqlite", _rng(seed, "sql-db"))
    sql_records = sql_gen.generate(out_dir / "sql" / "db.sqlite", rows, total, _rng(seed, "sql"))
    json_records = json_gen.generate(total, _rng(seed, "json"))
    for task, records in (("sql", sql_records), ("json", json_records)):
        for name, part in split(records, _rng(seed, f"{task}-split")).items():
            rel = f"{task}/{name}.jsonl"
            files[rel] = {"records": len(part), "sha256": write_jsonl(out_dir / rel, part)}
    probe = probe_gen.generate(_rng(seed, "probe"))
    files["general/probe.jsonl"] = {"records": len(probe),
                                    "sha256": write_jsonl(out_dir / "general" / "probe.jsonl", probe)}

    files.update(build_catalogue(out_dir, seed))

    manifest = {
        "seed": seed,
        "command": "python scripts/build_tasks.py",
        "sql_db_rows": {table: len(r) for table, r in rows.items()},
        "files": files,
    }
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    (out_dir / "manifest.json").write_text(text, encoding="utf-8", newline="\n")
    return manifest


def build_catalogue(out_dir: Path, seed: int = DEFAULT_SEED) -> dict[str, dict]:
    """The catalogue task's files (catalogue_gen.py) under out_dir/catalogue; {rel: records, sha256}."""
    files = {}
    for name, records in catalogue_gen.generate(_rng(seed, "catalogue")).items():
        rel = f"catalogue/{name}.jsonl"
        files[rel] = {"records": len(records), "sha256": write_jsonl(Path(out_dir) / rel, records)}
    return files
