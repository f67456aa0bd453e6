"""Human-readable table and JSON for an Estimate."""

from __future__ import annotations

import json

from lmtune.estimate.core import MAX_BATCH, Estimate

GIB = 1024 ** 3


def _gib(x: int) -> str:
    return f"{x / GIB:8.2f} GiB"


def _hours(h: float | None) -> str:
    if h is None:
        return "-"
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def _weights_label(method: str, est: Estimate) -> str:
    if method == "qlora":
        return "weights (4-bit linears, fp32 rest)"
    if method == "full":
        return "weights (fp32 master copy)" if est.request["weights_dtype"] in ("auto", "fp32") else "weights"
    return "weights (frozen base)"


def render_text(est: Estimate) -> str:
    r, m, mem = est.request, est.model, est.memory
    method = r["method"]
    lora = "" if method == "full" else f", r={r['lora_r']} on {r['lora_targets']}"
    lines = [
        f"model      {m['source']} ({m['model_type']}, {m['layers']} layers, hidden {m['hidden']}, vocab {m['vocab']:,})",
        f"run        {method}{lora}, {r['batch']} x {r['seq_len']} tokens per micro-batch, "
        f"grad accumulation {r['grad_accum']}, gradient checkpointing {'on' if r['grad_ckpt'] else 'off'}",
        f"params     {m['total_params']:,} in the base model (tied embeddings once; what lmtune train reports), "
        f"{m['trainable_params']:,} trainable ({m['trainable_pct']:.3f}% of the base)",
        "",
        f"memory per device on {est.device} (optimizer {est.optimizer})",
    ]
    rows = [(_weights_label(method, est), mem.weights)]
    if mem.quant_constants:
        rows.append((f"quantization constants ({'double quant' if r['double_quant'] else 'fp32 absmax'})",
                     mem.quant_constants))
    if mem.adapters:
        rows.append(("LoRA adapters", mem.adapters))
    if mem.reference:
        rows.append((f"reference model ({r.get('objective', 'dpo')}: frozen copy)", mem.reference))
    if mem.generation:
        rows.append(("sampling (grpo: KV cache + logits)", mem.generation))
    rows += [("gradients", mem.gradients),
             ("optimizer states" + (" (paged)" if mem.paged else ""), mem.optimizer),
             ("activations" + (" (checkpointed)" if r["grad_ckpt"] else ""), mem.activations),
             (f"loss buffers ({r['loss']} LM head)", mem.loss_buffers),
             ("optimizer step temporaries", mem.optimizer_step_temp),
             ("framework overhead", mem.overhead)]
    lines += [f"  {label:42} {_gib(v)}" for label, v in rows if v or label.startswith(("grad", "act"))]
    lines.append(f"  {'peak':42} {_gib(mem.peak)}")
    lines += [f"  note: {n}" for n in mem.notes]
    lines.append("")
    lines.append(f"  {'device':16} {'memory':>9} {'peak':>9} {'fits':>6} {'max batch':>10} {'time':>9} {'cost':>9}")
    for f in est.fits:
        fits = f.fits if f.fits != "no" or not f.fits_with_ckpt or r["grad_ckpt"] else "ckpt"
        cost = "-" if f.cost is None else f"${f.cost:,.2f}"
        top = f"{f.max_batch}+" if f.max_batch >= MAX_BATCH else str(f.max_batch)
        lines.append(f"  {f.device:16} {f.memory_gib:8.1f}G {f.peak_gib:8.2f}G {fits:>6} {top:>10} "
                     f"{_hours(f.hours):>9} {cost:>9}")
    if any(f.fits == "no" and f.fits_with_ckpt for f in est.fits) and not r["grad_ckpt"]:
        lines.append("  ckpt: fits once --grad-ckpt is on")
    if any(f.fits == "paged" for f in est.fits):
        lines.append("  paged: fits only with optimizer states paged out to CPU RAM (slower)")
    sp = est.speed
    if sp:
        lines.append("")
        lines.append(f"speed      {sp.tokens_per_second:,.0f} tokens/s from {sp.flops_per_token / 1e9:,.1f} "
                     f"GFLOP per token (assumed utilisation, see docs/estimate.md)")
        if sp.hours is not None:
            lines.append(f"training   {sp.train_tokens:,} tokens, {sp.optimizer_steps:,} optimizer steps: "
                         f"{_hours(sp.hours)}, ${sp.cost:,.2f}")
    elif not r.get("dataset_size"):
        lines.append("  (time and cost: pass --dataset-size and --gpu)")
    return "\n".join(lines)


def render_json(est: Estimate) -> str:
    return json.dumps(est.to_dict(), indent=2, default=str)
