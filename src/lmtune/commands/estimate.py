"""`lmtune estimate`: parameters, memory, fit, time and cost of a run, from the model's config."""

from __future__ import annotations

import argparse

# lmtune's own modules are imported inside the functions below: `lmtune --help` imports every
# command module to build its parser and must stay light (no torch, transformers, yaml).

OPTIMIZERS = ("auto", "adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit",
              "paged_adamw_32bit", "sgd", "adafactor")


def _bool(text: str) -> bool:
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments shared with `lmtune advise` (what to train and how)."""
    p.add_argument("--model", default="tiny",
                   help="preset name (see --list), 'tiny', a model directory, or a Hub id (config only)")
    p.add_argument("--method", choices=("full", "lora", "qlora"), default="lora", help="fine-tuning method")
    p.add_argument("--seq-len", type=int, default=512, help="tokens per (packed) row")
    p.add_argument("--lora-r", type=int, default=16, help="LoRA rank")
    p.add_argument("--lora-targets", default="all-linear",
                   help="all-linear, comma-separated module names (q_proj,v_proj), or one regex")
    p.add_argument("--lora-dropout", type=float, default=0.05, help="LoRA dropout (0 keeps fewer activations)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="auto",
                   help="auto: paged_adamw_8bit for qlora on GPU, else adamw_torch")
    p.add_argument("--gpu", default=None,
                   help="catalog GPU (3060, 3090, 4090, a10, l4, a100-40, a100-80, h100, h200) or cpu; "
                        "omitted: a fit table over the whole catalog")
    p.add_argument("--gpu-mem", type=float, default=None, help="GiB of a GPU that is not in the catalog")
    p.add_argument("--num-gpus", type=int, default=1, help="data-parallel GPUs")
    p.add_argument("--price-per-hour", type=float, default=None, help="USD per GPU-hour (overrides the catalog)")
    p.add_argument("--mfu", type=float, default=None, help="model FLOPs utilisation (overrides the catalog)")


def register(p: argparse.ArgumentParser) -> None:
    add_run_arguments(p)
    p.add_argument("--batch", type=int, default=1, help="micro-batch per device")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--grad-ckpt", type=_bool, nargs="?", const=True, default=False,
                   help="gradient checkpointing")
    p.add_argument("--dora", action="store_true", help="DoRA adapters (adds a magnitude vector per module)")
    p.add_argument("--precision", choices=("auto", "bf16", "fp16", "fp32"), default="auto",
                   help="training precision (auto: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--dtype", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="weights dtype (auto: what lmtune train loads: fp32 for full, 16-bit base for lora on GPU)")
    p.add_argument("--no-double-quant", action="store_true", help="qlora without double quantization")
    p.add_argument("--loss", choices=("fused", "plain"), default="fused",
                   help="fused: TRL's chunked LM head (lmtune train); plain: full logits (transformers' Trainer)")
    p.add_argument("--fsdp", action="store_true", help="shard weights, gradients and optimizer over --num-gpus")
    p.add_argument("--dataset-size", type=int, default=None, help="training examples")
    p.add_argument("--tokens-per-example", type=int, default=None, help="mean tokens per example (default: seq-len)")
    p.add_argument("--epochs", type=float, default=3.0, help="passes over the dataset")
    p.add_argument("--objective", choices=("sft", "dpo", "orpo", "kto", "grpo"), default="sft",
                   help="train.objective: full dpo/kto/grpo add a frozen reference copy; dpo/orpo batch two rows "
                        "per pair; grpo adds sampling's KV cache (--seq-len: prompt + rl.max_new_tokens; --batch: "
                        "sampled answers per micro-batch)")
    p.add_argument("--num-generations", type=int, default=4, help="grpo: rl.num_generations")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--list", action="store_true", help="list model presets and GPUs, then exit")


def request_from_args(args: argparse.Namespace):
    from lmtune.estimate import EstimateRequest

    return EstimateRequest(
        model=args.model, method=args.method, seq_len=args.seq_len, batch=args.batch,
        grad_accum=args.grad_accum, grad_ckpt=args.grad_ckpt, lora_r=args.lora_r,
        lora_targets=args.lora_targets, lora_dropout=args.lora_dropout, use_dora=args.dora,
        optimizer=args.optimizer, precision=args.precision, weights_dtype=args.dtype,
        double_quant=not args.no_double_quant, loss=args.loss, gpu=args.gpu, gpu_mem=args.gpu_mem,
        num_gpus=args.num_gpus, fsdp=args.fsdp, dataset_size=args.dataset_size,
        tokens_per_example=args.tokens_per_example, epochs=args.epochs,
        price_per_hour=args.price_per_hour, mfu=args.mfu, objective=getattr(args, "objective", "sft"),
        num_generations=getattr(args, "num_generations", 4))


def run(args: argparse.Namespace) -> int:
    if args.list:
        from lmtune.estimate.hardware import gpu_catalog
        from lmtune.estimate.shapes import preset_names

        print("models: " + ", ".join(preset_names()) + ", tiny")
        for d in gpu_catalog():
            print(f"gpu {d.key:10} {d.name:16} {d.memory_gib:7.2f} GiB {d.peak_tflops:7.1f} TFLOPS "
                  f"MFU {d.mfu:.2f} ${d.price_per_hour:.2f}/h")
        return 0
    from lmtune.estimate import estimate
    from lmtune.estimate.render import render_json, render_text

    est = estimate(request_from_args(args))
    print(render_json(est) if args.json else render_text(est))
    return 0
