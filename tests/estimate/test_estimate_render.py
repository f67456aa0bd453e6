"""lmtune/estimate/render.py: the whole table `lmtune estimate` prints for hand-built estimates
(every row, both footnotes, each method and precision's labels) and the JSON form."""

from __future__ import annotations

import dataclasses
import json

from lmtune.estimate.core import Estimate, EstimateRequest, Fit
from lmtune.estimate.hardware import GIB
from lmtune.estimate.memory import MemoryBreakdown
from lmtune.estimate.render import render_json, render_text
from lmtune.estimate.speed import Speed


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
