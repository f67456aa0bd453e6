"""env.json: what a run needs to be reproduced (versions, hardware, seed, data hash)."""

from __future__ import annotations

import hashlib
import platform
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("lmtune", "torch", "transformers", "peft", "trl", "accelerate", "datasets",
            "bitsandbytes", "tokenizers", "safetensors")


def file_sha256(paths) -> str:
    h = hashlib.sha256()
    for p in sorted(str(x) for x in paths):
        path = Path(p)
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for f in files:
            if f.is_file():
                h.update(f.name.encode())
                with f.open("rb") as fh:   # in blocks: a data file may be larger than memory
                    while block := fh.read(8 << 20):
                        h.update(block)
    return h.hexdigest()


def data_files(data) -> list[str]:
    """The files a run's data came from: prepared data lists them per split in its stats."""
    per_split = (getattr(data, "stats", None) or {}).get("files") or {}
    return list(dict.fromkeys(f for split in per_split.values() for f in split))


def collect_env(cfg, data=None) -> dict:
    import torch

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    hw = {"platform": platform.platform(), "python": sys.version.split()[0],
          "cpu_count": __import__("os").cpu_count(), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        hw["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    files = data_files(data)
    return {"versions": versions, "hardware": hw, "seed": cfg.train.seed,
            "torch_threads": torch.get_num_threads(),
            "data_files": [str(f) for f in files], "data_sha256": file_sha256(files) if files else None}
