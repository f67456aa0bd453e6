"""Training FLOPs, time and cost.

FLOPs per trained token:
- full fine-tuning: forward 2N + backward 4N = 6N for the weight matmuls (Kaplan et al. 2020,
  "Scaling Laws for Neural Language Models", sec. 2.1), plus attention scores 12 * L * s * d_attn
  (Chowdhery et al. 2022, "PaLM", appendix B: forward QK^T and AV are 4*s*d_attn per layer, x3 with backward);
- LoRA / QLoRA: the frozen weights need the gradient of their input but not of themselves, so the
  backward costs 2N instead of 4N: 4N + attention (unchanged) + 6 N_lora for the adapters (Hu et al.
  2021, "LoRA", sec. 4: no gradients for most parameters; they measured 25% higher throughput than
  full fine-tuning of GPT-3);
- gradient checkpointing recomputes every layer's forward once more: + 2 N_layers + 4 L s d_attn.
N counts every Linear weight including the LM head (the embedding lookup costs no matmul).
Time = FLOPs / (GPUs x peak x MFU); the MFU per GPU is an assumption from presets/gpus.yaml.
QLoRA dequantizes every 4-bit weight in forward and backward: assumed 25% slower than LoRA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lmtune.estimate.hardware import Device
from lmtune.estimate.shapes import ModelShape

QLORA_SLOWDOWN = 1.25        # assumed, see module doc
MULTI_GPU_EFFICIENCY = 0.9   # assumed data-parallel scaling beyond one GPU


@dataclass
class Speed:
    flops_per_token: float
    tokens_per_second: float
    train_tokens: int | None
    optimizer_steps: int | None
    hours: float | None
    cost: float | None


def flops_per_token(shape: ModelShape, method: str, seq_len: int, grad_ckpt: bool, lora_params: int) -> float:
    n = sum(l.weight_params for l in shape.linears)
    n_layers = sum(l.weight_params for l in shape.linears if l.layer is not None)
    attn_fwd = 4 * shape.num_layers * seq_len * shape.q_width
    if method == "full":
        flops = 6 * n + 3 * attn_fwd
    else:
        flops = 4 * n + 3 * attn_fwd + 6 * lora_params
    if grad_ckpt:
        flops += 2 * n_layers + attn_fwd
    return float(flops)


def speed(shape: ModelShape, device: Device, method: str, seq_len: int, grad_ckpt: bool, lora_params: int,
          num_gpus: int = 1, tokens_per_step: int | None = None, train_tokens: int | None = None) -> Speed:
    fpt = flops_per_token(shape, method, seq_len, grad_ckpt, lora_params)
    scale = num_gpus * (MULTI_GPU_EFFICIENCY if num_gpus > 1 else 1.0)
    tps = device.peak_tflops * 1e12 * device.mfu * scale / fpt
    if method == "qlora":
        tps /= QLORA_SLOWDOWN
    if not train_tokens:
        return Speed(fpt, tps, None, None, None, None)
    hours = train_tokens / tps / 3600
    steps = math.ceil(train_tokens / tokens_per_step) if tokens_per_step else None
    return Speed(fpt, tps, train_tokens, steps, hours, hours * device.price_per_hour * num_gpus)
