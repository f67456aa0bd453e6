"""Model shapes without weights: resolve `--model` (preset, directory, 'tiny', Hub id) to a config,
instantiate it on the meta device (no memory, no download of weights) and read off every number the
estimate needs: exact parameter counts, every Linear/Conv1D with its in/out features, the layer
geometry and the dropout settings.

torch and transformers are imported inside the functions (the CLI's --help must stay torch-free).
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from lmtune.errors import UserError

# Hub ids of the shipped presets -> preset file stem, so `--model meta-llama/Llama-3.1-8B` works offline.
HUB_ALIASES = {
    "meta-llama/llama-2-7b-hf": "llama-2-7b",
    "meta-llama/llama-2-13b-hf": "llama-2-13b",
    "meta-llama/llama-2-70b-hf": "llama-2-70b",
    "meta-llama/llama-3.1-8b": "llama-3.1-8b",
    "meta-llama/meta-llama-3.1-8b": "llama-3.1-8b",
    "meta-llama/llama-3.1-8b-instruct": "llama-3.1-8b",
    "meta-llama/llama-3.1-70b": "llama-3.1-70b",
    "meta-llama/llama-3.1-70b-instruct": "llama-3.1-70b",
    "mistralai/mistral-7b-v0.1": "mistral-7b-v0.1",
    "qwen/qwen2.5-0.5b": "qwen2.5-0.5b",
    "qwen/qwen2.5-1.5b": "qwen2.5-1.5b",
    "qwen/qwen2.5-3b": "qwen2.5-3b",
    "qwen/qwen2.5-7b": "qwen2.5-7b",
    "qwen/qwen2.5-14b": "qwen2.5-14b",
    "qwen/qwen2.5-32b": "qwen2.5-32b",
    "qwen/qwen2.5-72b": "qwen2.5-72b",
    "microsoft/phi-3-mini-4k-instruct": "phi-3-mini",
    "google/gemma-2-9b": "gemma-2-9b",
    # small models (configs from the Hub repos named in each preset's _name_or_path)
    "qwen/qwen3-0.6b": "qwen3-0.6b",
    "qwen/qwen3-0.6b-base": "qwen3-0.6b",
    "qwen/qwen3-1.7b": "qwen3-1.7b",
    "qwen/qwen3-1.7b-base": "qwen3-1.7b",
    "qwen/qwen3-4b": "qwen3-4b",
    "qwen/qwen3-4b-base": "qwen3-4b",
    "qwen/qwen3-8b": "qwen3-8b",
    "qwen/qwen3-8b-base": "qwen3-8b",
    "meta-llama/llama-3.2-1b": "llama-3.2-1b",
    "meta-llama/llama-3.2-1b-instruct": "llama-3.2-1b",
    "meta-llama/llama-3.2-3b": "llama-3.2-3b",
    "meta-llama/llama-3.2-3b-instruct": "llama-3.2-3b",
    "google/gemma-3-1b-it": "gemma-3-1b",
    "google/gemma-3-1b-pt": "gemma-3-1b",
    "google/gemma-3-4b-it": "gemma-3-4b",
    "google/gemma-3-4b-pt": "gemma-3-4b",
    "microsoft/phi-4-mini-instruct": "phi-4-mini",
    "huggingfacetb/smollm3-3b": "smollm3-3b",
    "huggingfacetb/smollm3-3b-base": "smollm3-3b",
}
# The Hub id a preset stands for (what a config written by `lmtune advise` names as the model).
PRESET_HUB_IDS = {
    "llama-2-7b": "meta-llama/Llama-2-7b-hf", "llama-2-13b": "meta-llama/Llama-2-13b-hf",
    "llama-2-70b": "meta-llama/Llama-2-70b-hf", "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B", "mistral-7b-v0.1": "mistralai/Mistral-7B-v0.1",
    "qwen2.5-0.5b": "Qwen/Qwen2.5-0.5B", "qwen2.5-1.5b": "Qwen/Qwen2.5-1.5B", "qwen2.5-3b": "Qwen/Qwen2.5-3B",
    "qwen2.5-7b": "Qwen/Qwen2.5-7B", "qwen2.5-14b": "Qwen/Qwen2.5-14B", "qwen2.5-32b": "Qwen/Qwen2.5-32B",
    "qwen2.5-72b": "Qwen/Qwen2.5-72B", "phi-3-mini": "microsoft/Phi-3-mini-4k-instruct",
    "gemma-2-9b": "google/gemma-2-9b",
    "qwen3-0.6b": "Qwen/Qwen3-0.6B",
    "qwen3-1.7b": "Qwen/Qwen3-1.7B",
    "qwen3-4b": "Qwen/Qwen3-4B",
    "qwen3-8b": "Qwen/Qwen3-8B",
    "llama-3.2-1b": "meta-llama/Llama-3.2-1B-Instruct",
    "llama-3.2-3b": "meta-llama/Llama-3.2-3B-Instruct",
    "gemma-3-1b": "google/gemma-3-1b-it",
    "gemma-3-4b": "google/gemma-3-4b-it",
    "phi-4-mini": "microsoft/Phi-4-mini-instruct",
    "smollm3-3b": "HuggingFaceTB/SmolLM3-3B",
}
_LAYER_INDEX = re.compile(r"\.(\d+)\.")


@dataclass(frozen=True)
class LinearInfo:
    """One Linear or Conv1D module: what LoRA can adapt and bitsandbytes can quantize."""
    name: str
    in_features: int
    out_features: int
    layer: int | None        # decoder layer index, None outside the layers (e.g. lm_head)
    conv1d: bool = False     # GPT-2's transformers Conv1D (not quantized by bitsandbytes)
    bias: int = 0            # bias elements
    is_head: bool = False    # the output embedding (lm_head)

    @property
    def weight_params(self) -> int:
        return self.in_features * self.out_features


@dataclass
class ModelShape:
    """Everything the estimate needs about a model, read from its config on the meta device."""
    source: str
    model_type: str
    total_params: int                     # distinct parameters (tied embeddings counted once)
    num_layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    tied: bool
    embed_params: int                     # input embedding (+ learned positions)
    linears: list[LinearInfo]
    param_shapes: list[tuple[str, tuple[int, ...]]]   # every distinct parameter, in model order
    attn_impl: str = "sdpa"
    family: str = "llama"                 # "llama" (gated MLP + RMSNorm), else "generic"
    norms_per_layer: int = 2
    fused_qkv: bool = False
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0           # residual / MLP dropout (GPT-2 resid_pdrop)
    final_logit_softcapping: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_params(self) -> int:
        """Parameters of one decoder layer (the mean; layers are identical in the supported families)."""
        inside = sum(_numel(s) for n, s in self.param_shapes if _layer_of(n) is not None)
        return inside // max(1, self.num_layers)


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _layer_of(name: str) -> int | None:
    m = _LAYER_INDEX.search(name)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------- resolving --model

def model_reference(model: str) -> str:
    """What a training config should name: a preset's Hub id, else what the user gave."""
    return PRESET_HUB_IDS.get(HUB_ALIASES.get(model.lower(), model.lower()), model)


def preset_dir() -> Path:
    return Path(str(resources.files("lmtune") / "presets" / "models"))


def preset_names() -> list[str]:
    return sorted(p.stem for p in preset_dir().glob("*.json"))


def _embedded_tiny() -> Path:
    return Path(str(resources.files("lmtune") / "assets" / "base" / "tiny"))


def resolve_config(model: str) -> tuple[dict, str]:
    """`--model` -> (config dict, where it came from). Tries preset, 'tiny', directory/file, Hub cache."""
    key = model.strip()
    stem = HUB_ALIASES.get(key.lower(), key.lower())
    preset = preset_dir() / f"{stem}.json"
    if preset.is_file():
        return json.loads(preset.read_text()), f"preset {stem}"
    if key == "tiny":
        path = _embedded_tiny() / "config.json"
        if not path.is_file():
            raise UserError("the embedded base 'tiny' is not built in this checkout",
                            ["build it with `python scripts/build_base.py`, or pass a preset: "
                             + ", ".join(preset_names())])
        return json.loads(path.read_text()), "embedded tiny base"
    path = Path(key).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        try:
            return json.loads(path.read_text()), str(path)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    return _from_hub(key), f"hub {key}"


def _from_hub(model_id: str) -> dict:
    """A Hub id: only its config.json is needed (a few KB); offline this works only from the cache."""
    hint = [f"presets: {', '.join(preset_names())}",
            "or a local directory holding config.json, or 'tiny' (the embedded base)"]
    if "/" not in model_id:
        raise UserError(f"--model {model_id!r}: not a preset, a directory or a Hub id (owner/name)", hint)
    try:
        from huggingface_hub import hf_hub_download
        path = hf_hub_download(model_id, "config.json")
    except Exception as exc:  # offline, unknown repo, gated repo: all mean "can't read its config"
        raise UserError(f"--model {model_id}: cannot read its config.json from the Hub "
                        f"({type(exc).__name__})", hint) from None
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------- meta-device shapes

@functools.lru_cache(maxsize=16)
def load_shape(model: str) -> ModelShape:
    """Resolve `model` and read its shape on the meta device (cached: advise asks many times)."""
    raw, source = resolve_config(model)
    return shape_from_config(raw, source)


def shape_from_config(raw: dict, source: str = "config") -> ModelShape:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = {k: v for k, v in raw.items() if k != "auto_map"}  # native classes only; never remote code
    model_type = raw.get("model_type")
    try:
        cfg = AutoConfig.for_model(**raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{source}: transformers cannot build a config for model_type {model_type!r} "
                        f"({exc})", ["estimate supports architectures that ship with transformers"]) from None
    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(cfg)
        except ValueError as exc:
            raise UserError(f"{source}: {model_type!r} is not a causal language model ({exc})") from None
    return _read_shape(model, cfg, source)


def _read_shape(model, cfg, source: str) -> ModelShape:
    from transformers.pytorch_utils import Conv1D
    import torch.nn as nn

    out_emb, in_emb = model.get_output_embeddings(), model.get_input_embeddings()
    tied = out_emb is not None and out_emb.weight is in_emb.weight
    linears = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            fin, fout = mod.in_features, mod.out_features
        elif isinstance(mod, Conv1D):  # weight is (in, out)
            fin, fout = mod.weight.shape
        else:
            continue
        bias = mod.bias.numel() if getattr(mod, "bias", None) is not None else 0
        linears.append(LinearInfo(name, int(fin), int(fout), _layer_of(name), isinstance(mod, Conv1D),
                                  bias, mod is out_emb))
    shapes = [(n, tuple(p.shape)) for n, p in model.named_parameters()]  # named_parameters dedupes ties
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return _assemble(model, text, source, linears, shapes, tied)


def _assemble(model, cfg, source, linears, shapes, tied) -> ModelShape:
    hidden = int(cfg.hidden_size)
    heads = int(cfg.num_attention_heads)
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // heads)
    layer0 = {lin.name.rsplit(".", 1)[-1]: lin for lin in linears if lin.layer == 0}
    inter = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * hidden
    gated = ("gate_proj" in layer0 or "gate_up_proj" in layer0) and "down_proj" in layer0
    norms = sum(1 for n, m in model.named_modules() if _layer_of(n + ".") == 0 and n.count(".") and
                "norm" in type(m).__name__.lower() and not any(c for c in m.children()))
    embed = sum(_numel(s) for n, s in shapes if "embed" in n or n.endswith(("wte.weight", "wpe.weight")))
    return ModelShape(
        source=source, model_type=cfg.model_type,
        total_params=sum(_numel(s) for _, s in shapes),
        num_layers=int(cfg.num_hidden_layers), hidden=hidden, heads=heads,
        kv_heads=int(getattr(cfg, "num_key_value_heads", None) or heads), head_dim=head_dim,
        intermediate=int(inter), vocab=int(cfg.vocab_size), tied=tied, embed_params=embed,
        linears=linears, param_shapes=shapes,
        attn_impl=str(getattr(model.config, "_attn_implementation", None) or "sdpa"),
        family="llama" if gated else "generic", norms_per_layer=max(1, norms),
        fused_qkv="qkv_proj" in layer0,
        attention_dropout=float(getattr(cfg, "attention_dropout", None) or getattr(cfg, "attn_pdrop", 0) or 0),
        hidden_dropout=float(getattr(cfg, "resid_pdrop", None) or getattr(cfg, "hidden_dropout", 0) or 0),
        final_logit_softcapping=getattr(cfg, "final_logit_softcapping", None),
        extra={"hidden_act": str(getattr(cfg, "hidden_act", None) or getattr(cfg, "activation_function", None) or "")},
    )
