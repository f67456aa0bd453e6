"""lmtune/estimate/hardware.py: the GPU catalog lookups (keys, names, aliases, a slower variant),
custom and CPU devices, RAM when the system does not say, overrides and their bounds, and
detect_devices on CUDA as torch reports it."""

from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace

import pytest
# Imported here, not only in detect_devices: a mutation run forks every mutant's tests from one
# process that collected this module, so the import is paid once.
import torch

from lmtune.errors import UserError
from lmtune.estimate import hardware
from lmtune.estimate.hardware import (GIB, Device, cpu_device, custom_gpu, detect_devices, find_gpu, gpu_catalog,
                                      with_overrides)


CATALOG = ["rtx3060", "rtx3090", "rtx4090", "a10", "l4", "a100-40", "a100-80", "h100", "h200"]


def test_catalog_entries():
    devices = gpu_catalog()
    assert [d.key for d in devices] == CATALOG
    assert devices[0] == Device("rtx3060", "RTX 3060 12GB", "cuda", 12 * GIB, 25.6, 0.35, 0.10)
    assert find_gpu("h200") == Device("h200", "H200 141GB", "cuda", int(140.4 * GIB), 989.0, 0.35, 3.79)
    assert Device("x", "x", "cuda", 3 * GIB // 2, 1.0, 1.0, 0.0).memory_gib == 1.5


@pytest.mark.parametrize("name,key", [("rtx3090", "rtx3090"), ("RTX 3090 24GB", "rtx3090"), ("3090", "rtx3090"),
                                      ("NVIDIA GeForce RTX 4090", "rtx4090"), ("Tesla A100-80GB", "a100-80"),
                                      ("a100", "a100-80"), ("A100 40GB", "a100-40"), ("L4", "l4"),
                                      ("h100_sxm", "h100"),
                                      # what torch.cuda.get_device_properties(0).name says on those cards
                                      ("NVIDIA H100 80GB HBM3", "h100"), ("NVIDIA H200", "h200"),
                                      ("NVIDIA A100-SXM4-80GB", "a100-80"), ("NVIDIA A100 80GB PCIe", "a100-80"),
                                      ("NVIDIA A100-SXM4-40GB", "a100-40"), ("NVIDIA A100-PCIE-40GB", "a100-40"),
                                      ("NVIDIA A10G", "a10"), ("NVIDIA L4", "l4")])
def test_find_gpu_by_key_name_or_alias(name, key):
    assert find_gpu(name).key == key


def test_a_slower_variant_is_not_taken_for_the_catalog_card():
    with pytest.raises(UserError):
        find_gpu("NVIDIA H100 PCIe")   # 756 dense bf16 TFLOPS, not the SXM card's 989


def test_unknown_gpu_names_the_catalog():
    assert hardware._norm("NVIDIA GeForce RTX 4090") == "4090" and hardware._norm("Tesla V100-SXM2") == "v100sxm2"
    with pytest.raises(UserError) as err:
        find_gpu("voodoo5")
    assert err.value.args[0] == "--gpu 'voodoo5': not in the catalog"
    assert err.value.problems == ["known: " + ", ".join(CATALOG) + ", cpu",
                                  "or describe your card with --gpu-mem GIB (and --tflops)"]


def test_custom_gpu():
    assert custom_gpu(12.5) == Device("custom", "GPU 12.5 GiB", "cuda", int(12.5 * GIB), 100.0, 0.35, 0.0)
    assert custom_gpu(8, tflops=50.0, name="my card") == Device("custom", "my card", "cuda", 8 * GIB, 50.0, 0.35, 0.0)
    assert custom_gpu(0.001).memory_bytes == int(0.001 * GIB)
    for bad in (0, -1.0):
        with pytest.raises(UserError) as err:
            custom_gpu(bad)
        assert err.value.args[0] == f"--gpu-mem: got {bad}, must be > 0 (GiB)"


def test_cpu_device(monkeypatch):
    assert cpu_device(2.0, 3) == Device("cpu", "CPU (3 cores)", "cpu", 2 * GIB, 0.1 * 3, 0.4, 0.0)
    here = cpu_device()
    assert here.name == f"CPU ({os.cpu_count()} cores)" and here.peak_tflops == 0.1 * os.cpu_count()
    assert here.memory_bytes == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: None)
    assert cpu_device(1.0).name == "CPU (1 cores)"


@pytest.mark.parametrize("error", [ValueError, OSError, AttributeError])
def test_ram_size_when_the_system_does_not_say(monkeypatch, error):
    def sysconf(name):
        raise error(name)
    monkeypatch.setattr(hardware.os, "sysconf", sysconf)
    assert hardware._ram_bytes() == 16 * GIB


def test_overrides_and_their_bounds():
    dev = find_gpu("4090")
    assert with_overrides(dev) == dev
    assert with_overrides(dev, price_per_hour=0.0, mfu=1.0) == dataclasses.replace(dev, price_per_hour=0.0, mfu=1.0)
    assert with_overrides(dev, mfu=0.01).price_per_hour == 0.35
    for kw, msg in ((dict(mfu=0.0), "--mfu: got 0.0, must be in (0, 1]"),
                    (dict(mfu=1.01), "--mfu: got 1.01, must be in (0, 1]"),
                    (dict(mfu=-0.5), "--mfu: got -0.5, must be in (0, 1]"),
                    (dict(price_per_hour=-0.01), "--price-per-hour: got -0.01, must be >= 0")):
        with pytest.raises(UserError) as err:
            with_overrides(dev, **kw)
        assert err.value.args[0] == msg


def _cuda(monkeypatch, name, memory, count=1):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cards = {0: SimpleNamespace(name=name, total_memory=memory)}   # the first card, by its index
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: cards[i])
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


def test_detect_devices(monkeypatch):
    if not torch.cuda.is_available():
        assert detect_devices() == (cpu_device(), 1)
    h100 = find_gpu("h100")
    _cuda(monkeypatch, "NVIDIA H100 80GB HBM3", h100.memory_bytes + 2 * GIB - 1, 8)
    assert detect_devices() == (h100, 8)
    # a card named like one in the catalog but with other memory (a cut-down variant): described as is
    _cuda(monkeypatch, "NVIDIA H100 80GB HBM3", h100.memory_bytes - 2 * GIB, 2)
    assert detect_devices() == (custom_gpu((h100.memory_bytes - 2 * GIB) / GIB, name="NVIDIA H100 80GB HBM3"), 2)
    _cuda(monkeypatch, "Voodoo 5", 6 * GIB)
    assert detect_devices() == (Device("custom", "Voodoo 5", "cuda", 6 * GIB, 100.0, 0.35, 0.0), 1)
