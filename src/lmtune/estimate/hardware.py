"""The hardware side of an estimate: the GPU catalog (presets/gpus.yaml), lookups by loose name,
custom devices (--gpu-mem) and this computer's CPU. Pure data; no torch."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, replace
from importlib import resources

import yaml

from lmtune.errors import UserError

GIB = 1024 ** 3


@dataclass(frozen=True)
class Device:
    key: str
    name: str
    kind: str                 # "cuda" | "cpu"
    memory_bytes: int
    peak_tflops: float        # dense bf16 on GPUs, fp32 on CPUs
    mfu: float
    price_per_hour: float

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / GIB


@functools.lru_cache(maxsize=1)
def _catalog() -> dict:
    text = (resources.files("lmtune") / "presets" / "gpus.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def _norm(name: str) -> str:
    name = name.lower()
    for word in ("nvidia", "geforce", "tesla", "rtx"):
        name = name.replace(word, "")
    return re.sub(r"[^a-z0-9]", "", name)


def gpu_catalog() -> list[Device]:
    return [_gpu(k, v) for k, v in _catalog()["gpus"].items()]


def _gpu(key: str, v: dict) -> Device:
    return Device(key, v["name"], "cuda", int(v["memory_gib"] * GIB), float(v["bf16_tflops"]),
                  float(v["mfu"]), float(v["price_per_hour"]))


def find_gpu(name: str) -> Device:
    """'3090', 'RTX 4090', 'a100-80', 'A100 80GB', 'h200' -> the catalog entry."""
    want = _norm(name)
    for key, v in _catalog()["gpus"].items():
        names = [key, v["name"], *v.get("aliases", [])]
        if want in {_norm(n) for n in names}:
            return _gpu(key, v)
    keys = ", ".join(_catalog()["gpus"])
    raise UserError(f"--gpu {name!r}: not in the catalog",
                    [f"known: {keys}, cpu", "or describe your card with --gpu-mem GIB (and --tflops)"])


def custom_gpu(memory_gib: float, tflops: float | None = None, name: str | None = None) -> Device:
    """A card that is not in the catalog, described by its memory (and optionally its bf16 TFLOPS)."""
    if memory_gib <= 0:
        raise UserError(f"--gpu-mem: got {memory_gib}, must be > 0 (GiB)")
    return Device("custom", name or f"GPU {memory_gib:g} GiB", "cuda", int(memory_gib * GIB),
                  tflops or 100.0, 0.35, 0.0)


def cpu_device(memory_gib: float | None = None, cores: int | None = None) -> Device:
    """This computer's CPU and RAM (or the given RAM size)."""
    c = _catalog()["cpu"]
    cores = cores or os.cpu_count() or 1
    mem = int(memory_gib * GIB) if memory_gib else _ram_bytes()
    return Device("cpu", f"CPU ({cores} cores)", "cpu", mem, c["tflops_per_core"] * cores,
                  float(c["mfu"]), float(c["price_per_hour"]))


def _ram_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 16 * GIB


def with_overrides(dev: Device, price_per_hour: float | None = None, mfu: float | None = None) -> Device:
    if mfu is not None and not 0 < mfu <= 1:
        raise UserError(f"--mfu: got {mfu}, must be in (0, 1]")
    if price_per_hour is not None and price_per_hour < 0:
        raise UserError(f"--price-per-hour: got {price_per_hour}, must be >= 0")
    return replace(dev, price_per_hour=dev.price_per_hour if price_per_hour is None else price_per_hour,
                   mfu=dev.mfu if mfu is None else mfu)


def detect_devices() -> tuple[Device, int]:
    """(this machine's first GPU, or its CPU and RAM; number of GPUs). Imports torch."""
    import torch

    if not torch.cuda.is_available():
        return cpu_device(), 1
    props = torch.cuda.get_device_properties(0)
    count = torch.cuda.device_count()
    try:
        known = find_gpu(props.name)
        if abs(known.memory_bytes - props.total_memory) < 2 * GIB:
            return known, count
    except UserError:
        pass
    return custom_gpu(props.total_memory / GIB, name=props.name), count
