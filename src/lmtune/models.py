"""Load a base model and its tokenizer: name resolution ('tiny' -> the embedded base), device and
precision choice, safe loading (safetensors only, no remote code unless asked), 4-bit for QLoRA,
and tokenizer fixes (a pad token distinct from eos)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from lmtune.config import Config, ModelConfig
from lmtune.data.tokenizer import resolve_model_path
from lmtune.errors import ConfigError, UserError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def check_model_source(mcfg: ModelConfig) -> str:
    """Resolve and check a model reference before any heavy loading; returns the resolved path/id."""
    ref = resolve_model_path(mcfg.name_or_path)
    path = Path(ref)
    looks_local = path.is_absolute() or ref.startswith((".", "~")) or path.exists()
    if looks_local:
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ConfigError(f"model.name_or_path: {ref!r} is not a model directory (no config.json)",
                              ["give a directory saved with save_pretrained, a Hub id, or 'tiny'"])
        weights = [p.name for p in path.iterdir()]
        has_safe = any(n.endswith(".safetensors") for n in weights)
        pickles = [n for n in weights if n.endswith(PICKLE_SUFFIXES)]
        if not has_safe and pickles and not mcfg.allow_pickle:
            raise ConfigError(
                f"model.name_or_path: {ref} has only pickle weights ({', '.join(sorted(pickles)[:3])})",
                ["pickle files can run arbitrary code when loaded; convert them to safetensors, or set "
                 "model.allow_pickle=true if you trust the source"])
        if (path / "config.json").is_file() and not mcfg.trust_remote_code:
            import json
            auto_map = json.loads((path / "config.json").read_text()).get("auto_map")
            if auto_map:
                raise ConfigError(f"model.name_or_path: {ref} needs custom code from the model repo "
                                  f"(auto_map: {', '.join(auto_map)})",
                                  ["set model.trust_remote_code=true only if you trust that code"])
    return ref


@dataclass
class Device:
    kind: str            # "cuda" | "cpu" | "mps"
    bf16_ok: bool        # hardware supports bf16 matmuls at speed
    name: str


def detect_device() -> Device:
    import torch

    if torch.cuda.is_available():
        return Device("cuda", torch.cuda.is_bf16_supported(), torch.cuda.get_device_name(0))
    return Device("cpu", False, "cpu")


def resolve_precision(requested: str, device: Device) -> str:
    """auto: bf16 on bf16 GPUs, fp16 on older GPUs, fp32 on CPU (bf16 is 2-4x slower on this CPU)."""
    if requested != "auto":
        if device.kind == "cpu" and requested == "fp16":
            raise ConfigError("train.precision: fp16 mixed precision needs a GPU",
                              ["use precision: auto or fp32 on CPU"])
        return requested
    if device.kind == "cuda":
        return "bf16" if device.bf16_ok else "fp16"
    return "fp32"


def torch_dtype(name: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def load_tokenizer(ref: str, mcfg: ModelConfig):
    """Load the tokenizer and give it a pad token distinct from eos (padding with eos would mask
    eos out of the loss, and the model would never learn to stop)."""
    from lmtune.data.tokenize import ensure_pad_token
    from lmtune.data.tokenizer import load_tokenizer as _load

    tok = _load(ref, mcfg.revision, mcfg.trust_remote_code)
    ensure_pad_token(tok)
    return tok


def quantization_config(cfg: Config, device: Device):
    """bitsandbytes 4-bit config for QLoRA (NF4/FP4, double quantization, compute dtype)."""
    from transformers import BitsAndBytesConfig

    compute = cfg.quant.compute_dtype
    if compute == "auto":
        compute = resolve_precision("auto", device)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.quant.type,
        bnb_4bit_use_double_quant=cfg.quant.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(compute),
        bnb_4bit_quant_storage=torch_dtype(compute),
    )


def load_model(ref: str, cfg: Config, device: Device, tokenizer=None, quantize: bool = False):
    """Load the causal LM in the dtype the run trains in (fp32 master weights under mixed precision)."""
    from transformers import AutoModelForCausalLM

    mcfg = cfg.model
    dtype = mcfg.dtype
    if dtype == "auto":
        # Mixed-precision training keeps fp32 master weights for full fine-tuning; frozen bases of
        # LoRA on GPU can sit in 16-bit since they receive no updates.
        dtype = resolve_precision("auto", device) if (cfg.method != "full" and device.kind == "cuda") else "fp32"
    kwargs = dict(revision=mcfg.revision, trust_remote_code=mcfg.trust_remote_code, dtype=torch_dtype(dtype),
                  use_safetensors=None if mcfg.allow_pickle else True)
    if mcfg.attn_implementation:
        kwargs["attn_implementation"] = mcfg.attn_implementation
    if quantize:
        kwargs["quantization_config"] = quantization_config(cfg, device)
        kwargs["device_map"] = {"": 0} if device.kind == "cuda" else {"": "cpu"}
        # bitsandbytes' CPU backend runs 4-bit matmuls in fp32 compute; keep non-quantized parts there too.
        if device.kind == "cpu":
            kwargs["dtype"] = torch_dtype("fp32")
    model = AutoModelForCausalLM.from_pretrained(ref, **kwargs)
    if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    if tokenizer is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
