"""Per model family: how llama.cpp's converter (convert_hf_to_gguf.py, its conversion/ classes)
writes it as GGUF. One Family per Hugging Face model_type: the llama.cpp architecture (a member
of gguf.MODEL_ARCH), how tensors change on the way, which hyperparameter keys only this family
has, and what llama.cpp cannot run and so is refused before anything is merged or written.

Tensor changes, each as the converter makes it:
- interleaved: llama.cpp's NORM RoPE rotates adjacent pairs, so q/k rows are permuted from HF's
  two halves (LlamaModel.permute); NEOX-RoPE architectures keep HF's layout;
- norm_plus_one: Gemma's RMSNorm multiplies by (1 + w); llama.cpp by w, so w + 1 is stored;
- neox_qkv: GPT-NeoX's fused query_key_value is per head (q, k, v); llama.cpp wants all q, then k, v;
- llama3 RoPE scaling becomes the rope_freqs tensor (LlamaModel.generate_extra_tensors).
Phi-3's fused qkv_proj and gate_up_proj stay fused: llama.cpp's phi3 splits them at run time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

from lmtune.errors import UserError

_CONVERT = "convert the merged folder with llama.cpp's convert_hf_to_gguf.py, which may know it"


def _nothing(writer, cfg: dict) -> None:
    return None


@dataclass(frozen=True)
class Family:
    arch: str                                   # gguf.MODEL_ARCH member
    interleaved: bool = False                   # NORM RoPE: q/k rows permuted
    norm_plus_one: bool = False
    neox_qkv: bool = False
    llama3_rope: bool = False                   # llama3 RoPE scaling -> rope_freqs (LlamaModel families)
    longrope: bool = False                      # longrope -> rope_factors_long/short (Phi-3/4)
    untied_output: bool = True                  # False: llama.cpp always reuses token_embd (Gemma 2)
    hparams: Callable = _nothing                # the keys only this family writes
    checks: tuple[Callable, ...] = field(default_factory=tuple)


def rope_params(cfg: dict, kind: str = "full_attention") -> dict:
    """The RoPE parameters of full (or sliding) attention layers, from transformers 5's
    rope_parameters (flat, or split per layer type) or an older rope_scaling + rope_theta."""
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if "full_attention" in rope or "sliding_attention" in rope:
        rope = rope.get(kind) or {}
    elif kind == "sliding_attention":
        return {"rope_theta": cfg["rope_local_base_freq"]} if cfg.get("rope_local_base_freq") else {}
    rope = dict(rope)
    rope.setdefault("rope_type", rope.get("type", "default"))
    # a config saved by transformers 4 (or straight from the Hub) keeps these at the top level,
    # under the names the converter also looks for
    for key, old_names in (("rope_theta", ("rope_theta", "rotary_emb_base")),
                           ("partial_rotary_factor", ("partial_rotary_factor", "rotary_pct", "rope_pct")),
                           ("original_max_position_embeddings", ("original_max_position_embeddings",))):
        value = next((cfg[n] for n in old_names if cfg.get(n) is not None), None)
        if key not in rope and value is not None:
            rope[key] = value
    return rope


def sliding_pattern(cfg: dict) -> list[bool] | None:
    """Which layers use the sliding window, from layer_types (written as llama.cpp's per-layer
    sliding_window_pattern array, so no default period is assumed)."""
    types = cfg.get("layer_types")
    return [t == "sliding_attention" for t in types] if types else None


# hyperparameters only some families have ------------------------------------------------------

def _gemma2(writer, cfg: dict) -> None:
    writer.add_attn_logit_softcapping(float(cfg["attn_logit_softcapping"] or 0.0))
    writer.add_final_logit_softcapping(float(cfg["final_logit_softcapping"] or 0.0))
    _sliding(writer, cfg)


def _gemma3(writer, cfg: dict) -> None:
    if cfg.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(float(cfg["final_logit_softcapping"]))
    _sliding(writer, cfg)


def _sliding(writer, cfg: dict) -> None:
    pattern = sliding_pattern(cfg)
    if cfg.get("sliding_window") and (pattern is None or any(pattern)):
        writer.add_sliding_window(int(cfg["sliding_window"]))
        if pattern is not None:
            writer.add_sliding_window_pattern(pattern)


def _phi3(writer, cfg: dict) -> None:
    rope = rope_params(cfg)
    writer.add_rope_scaling_orig_ctx_len(int(rope.get("original_max_position_embeddings")
                                             or cfg.get("original_max_position_embeddings")
                                             or cfg["max_position_embeddings"]))
    writer.add_sliding_window(int(cfg.get("sliding_window") or 0))  # llama.cpp's phi3 ignores it
    if rope["rope_type"] == "longrope":
        writer.add_rope_scaling_attn_factors(longrope_attention_factor(cfg))


def longrope_attention_factor(cfg: dict) -> float:
    """The cos/sin scale of longrope, as transformers computes it (the converter's formula, but an
    explicit attention_factor or factor in the config wins, as it does in transformers)."""
    rope = rope_params(cfg)
    orig = rope.get("original_max_position_embeddings") or cfg["original_max_position_embeddings"]
    if rope.get("attention_factor") is not None:
        return float(rope["attention_factor"])
    factor = rope.get("factor") or cfg["max_position_embeddings"] / orig
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))


def _gpt_neox(writer, cfg: dict) -> None:
    writer.add_parallel_residual(bool(cfg.get("use_parallel_residual", True)))


def _granite(writer, cfg: dict) -> None:
    for key, add in (("attention_multiplier", writer.add_attention_scale),
                     ("embedding_multiplier", writer.add_embedding_scale),
                     ("residual_multiplier", writer.add_residual_scale),
                     ("logits_scaling", writer.add_logit_scale)):
        if cfg.get(key):
            add(float(cfg[key]))


# refusals: what llama.cpp would run differently from transformers ----------------------------

def _no_qwen_window(cfg: dict) -> None:
    if cfg.get("use_sliding_window"):
        raise UserError(f"export --format gguf: {cfg['model_type']} with use_sliding_window: true has no "
                        "sliding window in llama.cpp (it would attend to the whole context)", [_CONVERT])


def _gemma_query_scale(cfg: dict) -> None:
    """llama.cpp scales queries by 1/sqrt(head_dim) (1/sqrt(hidden/heads) for the 27B layer
    counts) and reads no key for it; another query_pre_attn_scalar would change every attention."""
    n_layers, big = cfg["num_hidden_layers"], {"gemma2": 46, "gemma3_text": 62}[cfg["model_type"]]
    expected = cfg["hidden_size"] // cfg["num_attention_heads"] if n_layers == big else cfg["head_dim"]
    if cfg.get("query_pre_attn_scalar", expected) != expected:
        raise UserError(f"export --format gguf: query_pre_attn_scalar {cfg['query_pre_attn_scalar']} differs from "
                        f"the {expected} llama.cpp assumes for a {n_layers}-layer {cfg['model_type']}", [_CONVERT])


def _gemma3_no_attn_softcap(cfg: dict) -> None:
    if cfg.get("attn_logit_softcapping"):
        raise UserError("export --format gguf: gemma3 with attn_logit_softcapping: llama.cpp's gemma3 has none",
                        [_CONVERT])


def _smollm3_nope(cfg: dict) -> None:
    """llama.cpp's smollm3 skips RoPE on every 4th layer, fixed, and reads no key for it."""
    n = cfg["num_hidden_layers"]
    fixed = [int((i + 1) % 4 != 0) for i in range(n)]
    if list(cfg.get("no_rope_layers") or fixed) != fixed:
        raise UserError(f"export --format gguf: no_rope_layers {cfg['no_rope_layers']} is not the every-4th-layer "
                        "NoPE pattern llama.cpp's smollm3 runs", [_CONVERT])


FAMILIES: dict[str, Family] = {
    "llama": Family("LLAMA", interleaved=True, llama3_rope=True),
    # llama.cpp's llama architecture has no sliding window (the converter writes none): equal to
    # transformers while the context stays within the window (docs/deploy.md)
    "mistral": Family("LLAMA", interleaved=True, llama3_rope=True),
    "qwen2": Family("QWEN2", checks=(_no_qwen_window,)),
    "qwen3": Family("QWEN3", checks=(_no_qwen_window,)),
    "gemma2": Family("GEMMA2", norm_plus_one=True, untied_output=False, hparams=_gemma2,
                     checks=(_gemma_query_scale,)),
    "gemma3_text": Family("GEMMA3", norm_plus_one=True, hparams=_gemma3,
                          checks=(_gemma_query_scale, _gemma3_no_attn_softcap)),
    "phi3": Family("PHI3", longrope=True, hparams=_phi3),
    "gpt_neox": Family("GPTNEOX", neox_qkv=True, hparams=_gpt_neox),
    "olmo2": Family("OLMO2", hparams=_sliding),
    "smollm3": Family("SMOLLM3", interleaved=True, llama3_rope=True, checks=(_smollm3_nope,)),
    "granite": Family("GRANITE", interleaved=True, llama3_rope=True, hparams=_granite),
}

ROPE_TYPES = ("default", "linear", "yarn", "llama3", "longrope")


def family_of(cfg: dict) -> Family:
    """The Family of a config, or one UserError saying why llama.cpp cannot be given this model."""
    model_type = cfg.get("model_type")
    if model_type not in FAMILIES:
        raise UserError(f"export --format gguf: model type {model_type!r} is not supported "
                        f"(lmtune writes GGUF for {', '.join(FAMILIES)})",
                        ["merge the run (lmtune merge) and " + _CONVERT])
    family = FAMILIES[model_type]
    rope_type = rope_params(cfg)["rope_type"]
    if rope_type not in ROPE_TYPES or (rope_type == "llama3" and not family.llama3_rope) \
            or (rope_type == "longrope" and not family.longrope):
        raise UserError(f"export --format gguf: RoPE scaling {rope_type!r} of a {model_type} model is not "
                        "supported by lmtune's writer", [_CONVERT])
    for check in family.checks:
        check(cfg)
    return family


def extra_tensors(family: Family, cfg: dict):
    """(GGUF name, float32 array) of the tensors the converter generates from the config: llama3's
    rope_freqs; longrope's long and short factors (llama.cpp picks short up to the original context)."""
    import gguf
    import numpy as np

    rope = rope_params(cfg)
    if family.llama3_rope and rope["rope_type"] == "llama3":
        yield gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", llama3_rope_factors(cfg)
    if family.longrope and rope["rope_type"] == "longrope":
        for kind, key in ((gguf.MODEL_TENSOR.ROPE_FACTORS_LONG, "long_factor"),
                          (gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT, "short_factor")):
            yield gguf.TENSOR_NAMES[kind] + ".weight", np.asarray(rope[key], dtype=np.float32)


def llama3_rope_factors(cfg: dict):
    """rope_freqs as llama.cpp's converter computes it: per frequency, 1 (short wavelengths),
    `factor` (long ones), or the smooth blend between; llama.cpp divides each frequency by it."""
    import numpy as np

    rope = rope_params(cfg)
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    base, factor = rope.get("rope_theta", 10000.0), rope.get("factor", 8.0)
    low, high = rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_ctx = rope.get("original_max_position_embeddings", 8192)
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def neox_qkv_split(w, n_head: int):
    """GPT-NeoX's per-head (q, k, v) rows -> all q rows, then k, then v (weight or bias)."""
    import numpy as np

    per_head = w.reshape(n_head, 3, w.shape[0] // n_head // 3, *w.shape[1:])
    return np.concatenate([per_head[:, i].reshape(-1, *w.shape[1:]) for i in range(3)], axis=0)
