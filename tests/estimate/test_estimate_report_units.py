"""lmtune/estimate/speed.py, hardware.py and render.py with literal numbers and text: FLOPs per token
worked out by hand on a small shape, the GPU catalog lookups, custom and CPU devices, and the whole
table `lmtune estimate` prints for hand-built estimates. Only detect_devices uses torch.
The mutation run of these files uses these first (scripts/mutation.sh estimate/rest)."""

from __future__ import annotations

import dataclasses
import json
import os
from types import SimpleNamespace

import pytest
# Imported here, not only in detect_devices: a mutation run forks every mutant's tests from one
# process that collected this module, so the import is paid once.
import torch

from lmtune.errors import UserError
from lmtune.estimate import hardware
from lmtune.estimate.core import Estimate, EstimateRequest, Fit
from lmtune.estimate.hardware import (GIB, Device, cpu_device, custom_gpu, detect_devices, find_gpu, gpu_catalog,
                                      with_overrides)
from lmtune.estimate.memory import MemoryBreakdown
from lmtune.estimate.render import render_json, render_text
from lmtune.estimate.shapes import LinearInfo, ModelShape
from lmtune.estimate.speed import Speed, flops_per_token, speed

# ---------------------------------------------------------------- speed

# layer linears 10x20 and 5x6 (230 weights), a head 4x8 (32): N = 262; 2 layers, 4 heads of 8
SHAPE = ModelShape("s", "llama", 0, num_layers=2, hidden=32, heads=4, kv_heads=2, head_dim=8, intermediate=0,
                   vocab=8, tied=False, embed_params=0, param_shapes=[],
                   linears=[LinearInfo("l.0.a", 10, 20, 0), LinearInfo("l.1.b", 5, 6, 1),
                            LinearInfo("lm_head", 4, 8, None, is_head=True)])
ATTN = 4 * 2 * 10 * 32   # forward QK^T and AV at seq_len 10: 2560


def test_flops_per_token_by_method_and_recomputation():
    assert flops_per_token(SHAPE, "full", 10, False, 7) == 6 * 262 + 3 * ATTN == 9252
    assert flops_per_token(SHAPE, "lora", 10, False, 7) == 4 * 262 + 3 * ATTN + 6 * 7 == 8770
    assert flops_per_token(SHAPE, "qlora", 10, False, 7) == 8770
    assert flops_per_token(SHAPE, "full", 10, True, 7) == 9252 + 2 * 230 + ATTN == 12272
    assert flops_per_token(SHAPE, "lora", 10, True, 7) == 8770 + 2 * 230 + ATTN == 11790
    assert type(flops_per_token(SHAPE, "full", 10, False, 0)) is float


def test_speed_time_steps_and_cost():
    dev = Device("t", "T", "cuda", GIB, 9.252, 0.5, 2.0)   # 4.626e12 FLOP/s: 5e8 tokens/s of full at 9252
    assert speed(SHAPE, dev, "full", 10, False, 7) == Speed(9252.0, pytest.approx(5e8), None, None, None, None)
    assert speed(SHAPE, dev, "full", 10, False, 7, 1, 100, 0) == Speed(9252.0, pytest.approx(5e8), None, None,
                                                                        None, None)
    assert speed(SHAPE, dev, "full", 10, False, 7).tokens_per_second == pytest.approx(5e8, rel=1e-14)
    one = speed(SHAPE, dev, "full", 10, False, 7, 1, 7, 100)
    assert (one.flops_per_token, one.train_tokens, one.optimizer_steps) == (9252.0, 100, 15)   # last step partial
    assert one.hours == pytest.approx(100 / 5e8 / 3600) and one.cost == pytest.approx(one.hours * 2.0)
    # two GPUs at 90% scaling each: 9e8 tokens/s; 2 h for 6.48e12 tokens, paid for both cards
    two = speed(SHAPE, dev, "full", 10, False, 7, 2, 1000, 6_480_000_000_000)
    assert two.tokens_per_second == pytest.approx(9e8) and two.hours == pytest.approx(2.0)
    assert two.optimizer_steps == 6_480_000_000 and two.cost == pytest.approx(8.0)
    assert speed(SHAPE, dev, "full", 10, False, 7, 1, None, 100).optimizer_steps is None
    lora = speed(SHAPE, dev, "lora", 10, False, 7)
    assert lora.tokens_per_second == pytest.approx(4.626e12 / 8770)
    assert speed(SHAPE, dev, "qlora", 10, False, 7).tokens_per_second == pytest.approx(4.626e12 / 8770 / 1.25)
    ckpt = speed(SHAPE, dev, "lora", 10, True, 7)   # recomputation costs time
    assert ckpt.flops_per_token == 11790.0 and ckpt.tokens_per_second == pytest.approx(4.626e12 / 11790)


# ---------------------------------------------------------------- hardware

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


# ---------------------------------------------------------------- render

MODEL = {"source": "preset qwen2.5-0.5b", "model_type": "qwen2", "layers": 24, "hidden": 896, "vocab": 151936,
         "total_params": 494032768, "trainable_params": 1081344, "trainable_pct": 0.2189}


def _est(method, mem, fits, sp=None, **req):
    request = dataclasses.asdict(EstimateRequest(method=method, **req))
    return Estimate(request, MODEL, "opt", mem, "Some GPU", fits, sp)


def test_render_qlora_table_with_every_row_and_both_footnotes():
    mem = MemoryBreakdown(weights=GIB // 2, quant_constants=GIB // 8, adapters=GIB // 16, gradients=GIB // 16,
                          optimizer=GIB // 4, activations=3 * GIB, loss_buffers=GIB // 4, optimizer_step_temp=GIB // 32,
                          overhead=GIB, peak=5 * GIB + GIB // 4, paged=True, notes=["first", "second"])
    fits = [Fit("RTX 3060 12GB", 12.0, 5.25, "no", 0, True, 0.5, None),
            Fit("A100 80GB", 79.35, 5.25, "paged", 4096, False, 2.34, 1234.5),
            Fit("H100", 79.65, 5.25, "yes", 4095, True, None, 0.0),
            Fit("tiny", 1.0, 5.25, "no", 0, False, 1.0, 3.0)]
    est = _est("qlora", mem, fits, Speed(3.2e9, 12345.6, 76800, 75, 1.25, 0.525), lora_r=8,
               lora_targets="q_proj,v_proj", batch=2, seq_len=256, grad_accum=4)
    assert render_text(est) == "\n".join([
        "model      preset qwen2.5-0.5b (qwen2, 24 layers, hidden 896, vocab 151,936)",
        "run        qlora, r=8 on q_proj,v_proj, 2 x 256 tokens per micro-batch, grad accumulation 4, "
        "gradient checkpointing off",
        "params     494,032,768 in the base model (tied embeddings once; what lmtune train reports), "
        "1,081,344 trainable (0.219% of the base)",
        "",
        "memory per device on Some GPU (optimizer opt)",
        "  weights (4-bit linears, fp32 rest)             0.50 GiB",
        "  quantization constants (double quant)          0.12 GiB",
        "  LoRA adapters                                  0.06 GiB",
        "  gradients                                      0.06 GiB",
        "  optimizer states (paged)                       0.25 GiB",
        "  activations                                    3.00 GiB",
        "  loss buffers (fused LM head)                   0.25 GiB",
        "  optimizer step temporaries                     0.03 GiB",
        "  framework overhead                             1.00 GiB",
        "  peak                                           5.25 GiB",
        "  note: first",
        "  note: second",
        "",
        "  device              memory      peak   fits  max batch      time      cost",
        "  RTX 3060 12GB        12.0G     5.25G   ckpt          0    30 min         -",
        "  A100 80GB            79.3G     5.25G  paged      4096+     2.3 h $1,234.50",
        "  H100                 79.7G     5.25G    yes       4095         -     $0.00",
        "  tiny                  1.0G     5.25G     no          0     1.0 h     $3.00",
        "  ckpt: fits once --grad-ckpt is on",
        "  paged: fits only with optimizer states paged out to CPU RAM (slower)",
        "",
        "speed      12,346 tokens/s from 3.2 GFLOP per token (assumed utilisation, see docs/estimate.md)",
        "training   76,800 tokens, 75 optimizer steps: 1.2 h, $0.53"])


def _mem(**kw):
    base = dict(weights=2 * GIB, quant_constants=0, adapters=0, gradients=0, optimizer=GIB, activations=0,
                loss_buffers=0, optimizer_step_temp=0, overhead=0, peak=3 * GIB)
    return MemoryBreakdown(**{**base, **kw})


def test_render_full_run_with_checkpointing_and_no_speed():
    fits = [Fit("CPU (2 cores)", 16.0, 3.0, "no", 0, True, 0.999, None)]
    est = _est("full", _mem(), fits, grad_ckpt=True, loss="plain", double_quant=False)
    assert render_text(est) == "\n".join([
        "model      preset qwen2.5-0.5b (qwen2, 24 layers, hidden 896, vocab 151,936)",
        "run        full, 1 x 512 tokens per micro-batch, grad accumulation 1, gradient checkpointing on",
        "params     494,032,768 in the base model (tied embeddings once; what lmtune train reports), "
        "1,081,344 trainable (0.219% of the base)",
        "",
        "memory per device on Some GPU (optimizer opt)",
        "  weights (fp32 master copy)                     2.00 GiB",
        "  gradients                                      0.00 GiB",   # always shown, even at zero
        "  optimizer states                               1.00 GiB",
        "  activations (checkpointed)                     0.00 GiB",
        "  peak                                           3.00 GiB",
        "",
        "  device              memory      peak   fits  max batch      time      cost",
        "  CPU (2 cores)        16.0G     3.00G     no          0    60 min         -",
        "  (time and cost: pass --dataset-size and --gpu)"])


def test_render_labels_of_each_method_and_precision():
    def lines(method, mem=None, sp=None, **req):
        return render_text(_est(method, mem or _mem(), [], sp, **req)).splitlines()
    assert lines("full", weights_dtype="fp32")[5] == "  weights (fp32 master copy)                     2.00 GiB"
    assert lines("full", weights_dtype="bf16")[5] == "  weights                                        2.00 GiB"
    lora = lines("lora", sp=Speed(2.45e9, 999.4, None, None, None, None), dataset_size=5)
    assert lora[1] == ("run        lora, r=16 on all-linear, 1 x 512 tokens per micro-batch, grad accumulation 1, "
                       "gradient checkpointing off")
    assert lora[5] == "  weights (frozen base)                          2.00 GiB"
    assert lora[-2:] == ["", "speed      999 tokens/s from 2.5 GFLOP per token (assumed utilisation, see "
                                 "docs/estimate.md)"]   # no time without a dataset size and no hint either
    assert lora[-3] == "  device              memory      peak   fits  max batch      time      cost"
    # cards that fit as they are: no footnote about checkpointing, whatever checkpointing would allow
    fit = [Fit("G", 1.0, 2.0, "yes", 3, True, None, None), Fit("H", 1.0, 2.0, "paged", 0, True, None, None)]
    assert "ckpt:" not in render_text(_est("lora", _mem(), fit))
    # --dataset-size without a --gpu: no hint line, no speed
    assert lines("lora", dataset_size=5)[-1] == (
        "  device              memory      peak   fits  max batch      time      cost")
    q = lines("qlora", _mem(quant_constants=GIB // 4), double_quant=False)
    assert q[6] == "  quantization constants (fp32 absmax)           0.25 GiB"


def test_render_json_is_the_estimate_as_a_dict():
    est = _est("lora", _mem(notes=["n"]), [Fit("G", 1.0, 2.0, "yes", 3, True, None, None)],
               Speed(1.0, 2.0, None, None, None, None))
    text = render_json(est)
    assert json.loads(text) == json.loads(json.dumps(est.to_dict()))
    assert text.startswith('{\n  "request": {\n    "model": "tiny",')   # indented by two
