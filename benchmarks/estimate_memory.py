"""Predicted vs measured peak memory of training steps, for `lmtune estimate`.

Each case runs in a FRESH process (peak RSS is per process and never goes down): it imports what
`lmtune train` imports, builds the model the way lmtune does (lmtune.models.load_model,
lmtune.train.methods.prepare, TRL's fused LM head, TRL's bf16 cast of QLoRA adapters), runs a few
optimizer steps on random tokens and reports
  CPU:  peak RSS (VmHWM, reset after setup) and RSS after the imports (the framework baseline);
  CUDA: torch.cuda.max_memory_allocated (tensors only; the CUDA context is extra).
The parent prints one JSON line per case with the estimate next to the measurement. On a CUDA
machine the GPU_CASES (a 1.24B Llama at 2,048 tokens) run as well; they need trl and bitsandbytes.

    nice python benchmarks/estimate_memory.py                 # all cases (~10 min on 2 CPU cores)
    python benchmarks/estimate_memory.py --only tiny          # cases whose name contains 'tiny'
    python benchmarks/estimate_memory.py --out results.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GIB = 1024 ** 3
HERE = Path(__file__).resolve().parent

# Random-initialised models of two sizes and two architectures (Llama; Qwen2 with tied embeddings).
MODELS = {
    "tiny": {"model_type": "llama", "hidden_size": 256, "intermediate_size": 704, "num_attention_heads": 8,
             "num_key_value_heads": 4, "num_hidden_layers": 4, "vocab_size": 4096,
             "max_position_embeddings": 1024, "tie_word_embeddings": True},
    "small": {"model_type": "llama", "hidden_size": 768, "intermediate_size": 2048, "num_attention_heads": 12,
              "num_key_value_heads": 4, "num_hidden_layers": 12, "vocab_size": 32000,
              "max_position_embeddings": 1024, "tie_word_embeddings": False},
    "small-qwen2": {"model_type": "qwen2", "hidden_size": 512, "intermediate_size": 1408,
                    "num_attention_heads": 8, "num_key_value_heads": 2, "num_hidden_layers": 8,
                    "vocab_size": 32000, "max_position_embeddings": 1024, "tie_word_embeddings": True},
}

# name, model, method, seq_len, batch, grad_ckpt, loss
CASES = [
    ("tiny-full", "tiny", "full", 256, 4, False, "fused"),
    ("tiny-lora", "tiny", "lora", 256, 4, False, "fused"),
    ("tiny-qlora", "tiny", "qlora", 256, 4, False, "fused"),
    ("small-full", "small", "full", 256, 2, False, "fused"),
    ("small-full-ckpt", "small", "full", 256, 2, True, "fused"),
    ("small-lora", "small", "lora", 256, 4, False, "fused"),
    ("small-lora-ckpt", "small", "lora", 256, 4, True, "fused"),
    ("small-lora-plainloss", "small", "lora", 256, 4, False, "plain"),
    ("small-qlora", "small", "qlora", 256, 4, False, "fused"),
    ("small-qlora-bf16", "small", "qlora", 256, 4, True, "fused"),
    ("small-qlora-bf16-peft", "small", "qlora", 256, 4, True, "fused"),
    ("small-qwen2-lora", "small-qwen2", "lora", 512, 2, False, "fused"),
    ("small-qwen2-full", "small-qwen2", "full", 512, 2, False, "fused"),
]
# CUDA only (skipped on CPU): a Llama-3.2-1B-shaped model (1.24B parameters, 128k vocabulary, tied)
MODELS["1b"] = {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 32,
                "num_key_value_heads": 8, "num_hidden_layers": 16, "vocab_size": 128256, "head_dim": 64,
                "max_position_embeddings": 4096, "tie_word_embeddings": True}
GPU_CASES = [
    ("gpu-1b-full", "1b", "full", 2048, 2, False, "fused"),
    ("gpu-1b-full-ckpt", "1b", "full", 2048, 4, True, "fused"),
    ("gpu-1b-lora", "1b", "lora", 2048, 4, False, "fused"),
    ("gpu-1b-lora-ckpt", "1b", "lora", 2048, 8, True, "fused"),
    ("gpu-1b-qlora-ckpt", "1b", "qlora", 2048, 8, True, "fused"),
    ("gpu-1b-lora-plainloss", "1b", "lora", 2048, 4, False, "plain"),
]
STEPS = 2   # step 1 allocates the optimizer states; step 2 is the steady state
# QLoRA the way it runs on a bf16 GPU, here on CPU: 4-bit linears with bf16 storage and compute, the rest
# of the base in bf16, bf16 autocast. "-bf16" prepares it with lmtune.train.methods.prepare (embeddings, norms,
# head stay bf16), "-bf16-peft" with peft's prepare_model_for_kbit_training (all of them upcast to fp32).
BF16_QLORA = {"small-qlora-bf16": "lmtune", "small-qlora-bf16-peft": "peft"}


# ---------------------------------------------------------------- child: one measured run

class InUseSampler:
    """Peak of glibc's in-use heap (mallinfo2: arena + mmapped chunks), sampled every 0.5 ms: the
    CPU analogue of torch.cuda.max_memory_allocated (live allocations, without freed-but-kept memory)."""

    def __init__(self):
        import ctypes
        import threading

        class Info(ctypes.Structure):
            _fields_ = [(n, ctypes.c_size_t) for n in
                        "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

        self._libc = ctypes.CDLL("libc.so.6")
        self._libc.mallinfo2.restype = Info
        self.peak, self._stop = self.now(), False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now(self) -> int:
        info = self._libc.mallinfo2()
        return info.uordblks + info.hblkhd

    def _run(self):
        while not self._stop:
            self.peak = max(self.peak, self.now())
            time.sleep(0.0005)

    def stop(self) -> int:
        self._stop = True
        self._thread.join()
        return self.peak


def _rss_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(field + r":\s+(\d+)", text).group(1))


def child(case: dict) -> dict:
    import torch
    import transformers  # noqa: F401  (same imports as `lmtune train`)
    import peft  # noqa: F401
    import bitsandbytes
    import trl  # noqa: F401
    from trl.trainer.utils import add_fused_lm_head

    from lmtune.config import from_dict
    from lmtune.train.methods import prepare
    from lmtune.models import detect_device, load_model

    torch.manual_seed(0)
    cuda = torch.cuda.is_available()
    baseline = _rss_kib("VmRSS") * 1024
    cfg = from_dict({"model": {"name_or_path": case["model_dir"]}, "method": case["method"],
                     "data": {"task": "sql"},
                     "train": {"gradient_checkpointing": case["grad_ckpt"], "batch_size": case["batch"]}})
    device = detect_device()
    bf16 = case.get("prepare") is not None
    if bf16:
        model = _load_bf16_4bit(case["model_dir"], cfg, device)
    else:
        model = load_model(case["model_dir"], cfg, device, quantize=case["method"] == "qlora")
    if cuda and case["method"] != "qlora":
        model.to("cuda")
    if case["loss"] == "fused":
        add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))   # as SFTTrainer does
    if case["grad_ckpt"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if case.get("prepare") == "peft":
        from peft import prepare_model_for_kbit_training

        from lmtune.train.methods.lora import attach

        model = attach(prepare_model_for_kbit_training(model, use_gradient_checkpointing=False), cfg)
    else:
        model = prepare(model, cfg)
    if case["method"] == "qlora":   # SFTTrainer casts QLoRA adapters to bf16
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    if cuda and case["method"] == "qlora":
        # what lmtune's optimizer "auto" picks for QLoRA on CUDA; its paged (managed) memory is not in
        # torch.cuda.max_memory_allocated, the states are small next to the rest for adapters
        opt = bitsandbytes.optim.PagedAdamW8bit(params, lr=1e-5)
    else:
        opt = torch.optim.AdamW(params, lr=1e-5)   # adamw_torch: foreach on CUDA, per tensor on CPU
    dev = "cuda" if cuda else "cpu"
    vocab = model.config.vocab_size
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cuda else
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16))
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")   # reset VmHWM to the current RSS
    setup = _rss_kib("VmRSS") * 1024
    sampler = None if cuda else InUseSampler()
    inuse_setup = sampler.now() if sampler else 0
    t0 = time.time()
    for _ in range(STEPS):
        ids = torch.randint(0, vocab, (case["batch"], case["seq_len"]), device=dev)
        with autocast:
            if case["loss"] == "fused":
                out = model(input_ids=ids, labels=ids, fused_lm_head=True)
            else:
                out = model(input_ids=ids, labels=ids)
        loss = out.loss
        del out            # Trainer.compute_loss returns only the loss: the outputs die before backward
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    result = {"baseline_bytes": baseline, "setup_bytes": setup, "seconds_per_step": (time.time() - t0) / STEPS,
              "device": "cuda" if cuda else "cpu"}
    if cuda:
        result["peak_bytes"] = torch.cuda.max_memory_allocated()
    else:
        result["peak_bytes"] = _rss_kib("VmHWM") * 1024
        # live heap growth over setup, plus the weights and states that were live at setup
        result["inuse_peak_over_setup"] = sampler.stop() - inuse_setup
    return result


def _load_bf16_4bit(model_dir: str, cfg, device):
    """The CUDA path of lmtune.models.load_model for QLoRA (4-bit linears, bf16 storage, compute and
    non-quantized parts), which load_model replaces by fp32 on CPU."""
    import dataclasses

    import torch
    from transformers import AutoModelForCausalLM

    from lmtune.models import quantization_config

    cfg = dataclasses.replace(cfg, quant=dataclasses.replace(cfg.quant, compute_dtype="bf16"))
    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, device_map={"": "cpu"},
                                                quantization_config=quantization_config(cfg, device))


# ---------------------------------------------------------------- parent: cases, predictions, output

def save_model(name: str, root: Path) -> Path:
    """Random-initialised weights saved once, so every method loads them like a real checkpoint."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out = root / name
    if (out / "config.json").is_file():
        return out
    torch.manual_seed(0)
    spec = dict(MODELS[name])
    cfg = AutoConfig.for_model(spec.pop("model_type"), **spec)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    return out


def predict(model_dir: Path, case: dict, device_kind: str) -> dict:
    from lmtune.estimate import RunSpec, load_shape, memory_breakdown
    from lmtune.estimate.lora import LoraSpec

    dtypes = {}
    if case.get("prepare"):   # bf16 QLoRA on CPU: lmtune keeps the non-4-bit parts bf16, peft makes them fp32
        dtypes = {"precision": "bf16", "weights_dtype": "bf16" if case["prepare"] == "lmtune" else "fp32"}
    spec = RunSpec(method=case["method"], seq_len=case["seq_len"], batch=case["batch"],
                   grad_ckpt=case["grad_ckpt"], lora=LoraSpec(), loss=case["loss"], **dtypes)
    mem = memory_breakdown(load_shape(str(model_dir)), spec, device_kind)
    return {"predicted_peak_bytes": mem.peak, "predicted_tensor_bytes": mem.peak - mem.overhead,
            # what is allocated after setup (weights and quantization constants exist before)
            "predicted_over_setup": mem.peak - mem.overhead - mem.weights - mem.quant_constants - mem.adapters,
            "predicted": mem.as_gib()}


def seed_figure(case: dict) -> str | None:
    """The seed tutorial's 7B figures, for the table in docs/estimate.md (it gives none for small models)."""
    return {"full": "~60-80 GB (7B)", "lora": "~22-26 GB (7B, r=16)", "qlora": "~7.5-9.5 GB (7B)"}.get(case["method"])


def _embedded_tiny() -> None:
    """When the embedded base is built, measure it too (its real config, random weights)."""
    path = HERE.parent / "src" / "lmtune" / "assets" / "base" / "tiny" / "config.json"
    if path.is_file():
        MODELS["embedded"] = json.loads(path.read_text())
        CASES[:0] = [("embedded-full", "embedded", "full", 256, 4, False, "fused"),
                     ("embedded-lora", "embedded", "lora", 256, 4, False, "fused")]


def compare(case: dict, measured: dict, model_dir: Path) -> dict:
    pred = predict(model_dir, case, measured["device"])
    out = {**case, **measured, **pred}
    out.pop("model_dir", None)
    peak, base = measured["peak_bytes"], measured["baseline_bytes"]
    if measured["device"] == "cpu":
        out["measured_tensor_bytes"] = peak - base
        out["ratio_total"] = round(pred["predicted_peak_bytes"] / peak, 3)
        out["ratio_inuse"] = round(pred["predicted_over_setup"] / measured["inuse_peak_over_setup"], 3)
    else:
        out["measured_tensor_bytes"] = peak
    out["ratio_tensors"] = round(pred["predicted_tensor_bytes"] / out["measured_tensor_bytes"], 3)
    out["seed_7b_figure"] = seed_figure(case)
    return out


def repredict(path: str, root: Path) -> None:
    """Recompute the predictions of saved results with the current estimate code (no re-measuring)."""
    keys = ("baseline_bytes", "setup_bytes", "seconds_per_step", "device", "peak_bytes", "inuse_peak_over_setup")
    for line in Path(path).read_text().splitlines():
        old = json.loads(line)
        spec = next(c for c in CASES + GPU_CASES if c[0] == old["name"])
        case = dict(zip(("name", "model", "method", "seq_len", "batch", "grad_ckpt", "loss"), spec))
        if case["name"] in BF16_QLORA:
            case["prepare"] = BF16_QLORA[case["name"]]
        measured = {k: old[k] for k in keys if k in old}
        print(json.dumps(compare(case, measured, save_model(case["model"], root))), flush=True)


def run_case(name, model, method, seq_len, batch, grad_ckpt, loss, root: Path) -> dict:
    model_dir = save_model(model, root)
    case = {"name": name, "model": model, "model_dir": str(model_dir), "method": method, "seq_len": seq_len,
            "batch": batch, "grad_ckpt": grad_ckpt, "loss": loss}
    if name in BF16_QLORA:
        case["prepare"] = BF16_QLORA[name]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error",
               PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(case)], capture_output=True,
                          text=True, env=env)
    if proc.returncode != 0:
        return {**case, "error": proc.stderr.strip().splitlines()[-1:]}
    measured = json.loads(proc.stdout.strip().splitlines()[-1])
    return compare(case, measured, model_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--only", default="", help="run the cases whose name contains this text")
    ap.add_argument("--out", default=None, help="also append the JSON lines to this file")
    ap.add_argument("--repredict", default=None, help="recompute the predictions of a results file")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    _embedded_tiny()
    if args.repredict:
        with tempfile.TemporaryDirectory(prefix="lmtune-bench-") as tmp:
            repredict(args.repredict, Path(tmp))
        return
    import torch

    cases = CASES + (GPU_CASES if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory(prefix="lmtune-bench-") as tmp:
        for case in cases:
            if args.only and args.only not in case[0]:
                continue
            line = json.dumps(run_case(*case, root=Path(tmp)))
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(line + "\n")


if __name__ == "__main__":
    main()
