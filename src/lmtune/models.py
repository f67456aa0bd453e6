"""Load a base model and its tokenizer: name resolution ('tiny' -> the embedded base), device and
precision choice, safe loading (safetensors only, no remote code unless asked), 4-bit for QLoRA,
and tokenizer fixes (a pad token distinct from eos)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lmtune.data.tokenize import ensure_pad_token
from lmtune.errors import ConfigError, UserError
from lmtune.train.packed_attention import register

if TYPE_CHECKING:   # annotations only: `lmtune data check` opens a tokenizer here and must not pay for pydantic
    from lmtune.config import Config, ModelConfig

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


# ---------------------------------------------------------------- names and tokenizer files (no torch)
EMBEDDED = ("tiny",)


def embedded_model_dir(name: str) -> Path:
    """Where the embedded base `name` lives inside the package."""
    return Path(__file__).resolve().parent / "assets" / "base" / name


def resolve_model_path(name_or_path: str) -> str:
    """'tiny' -> the embedded directory (error when it has not been built); else unchanged."""
    if name_or_path in EMBEDDED:
        path = embedded_model_dir(name_or_path)
        if not (path / "tokenizer_config.json").is_file() and not (path / "tokenizer.json").is_file():
            raise UserError(f"the embedded '{name_or_path}' base is not built in this checkout ({path})",
                            ["build it with scripts/build_base.py, or pass --model DIR"])
        return str(path)
    return name_or_path


def open_tokenizer(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """Tokenizer for a local directory, the embedded 'tiny' base, or a Hub id (cached), as saved
    (`load_tokenizer` adds the pad-token fix training needs). A local directory loads torch-free:
    `AutoTokenizer` imports torch (seconds), so the class named in tokenizer_config.json is taken
    from the `transformers` package directly (its lazy loader imports only that module)."""
    path = resolve_model_path(name_or_path)
    local = Path(path).expanduser()
    if not local.is_dir() and (local.is_absolute() or path.startswith((".", "~"))):
        raise UserError(f"model directory not found: {path}",
                        ["pass an existing model directory, a cached Hub id (org/name), or 'tiny'"])
    try:
        if local.is_dir() and not trust_remote_code:
            return _load_local(local)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a tokenizer from {name_or_path!r}",
                        [f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                         "pass a local model directory (with tokenizer.json) or a cached Hub id"]) from None


def _load_local(path: Path) -> Any:
    import transformers

    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    name = config.get("tokenizer_class") or "PreTrainedTokenizerFast"
    cls = getattr(transformers, name, None) or getattr(transformers, name.removesuffix("Fast"), None)
    if cls is None:  # an unknown class name: the generic tokenizers-backed class reads tokenizer.json
        cls = transformers.PreTrainedTokenizerFast
    return cls.from_pretrained(str(path))


# ---------------------------------------------------------------- checks before loading


def check_model_source(mcfg: ModelConfig) -> str:
    """Resolve and check a model reference before any heavy loading; returns the resolved path/id."""
    ref = resolve_model_path(mcfg.name_or_path)
    path = Path(ref)
    looks_local = path.is_absolute() or ref.startswith((".", "~")) or path.exists()
    if looks_local:
        if not path.exists():
            raise ConfigError(f"model.name_or_path: {ref} does not exist",
                              ["give the directory of a saved model, a Hub id (org/name), or 'tiny'"])
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ConfigError(f"model.name_or_path: {ref!r} is not a model directory (no config.json)",
                              ["give a directory saved with save_pretrained, a Hub id, or 'tiny'"])
        weights = [p.name for p in path.iterdir()]
        has_safe = any(n.endswith(".safetensors") for n in weights)
        pickles = [n for n in weights if n.endswith(PICKLE_SUFFIXES)]
        if not has_safe and not pickles:
            raise ConfigError(f"model.name_or_path: {ref} has a config.json but no weight files",
                              ["save the model with save_pretrained (model.safetensors), or fetch it again"])
        if not has_safe and not mcfg.allow_pickle:
            raise ConfigError(
                f"model.name_or_path: {ref} has only pickle weights ({', '.join(sorted(pickles)[:3])})",
                ["pickle files can run arbitrary code when loaded; convert them to safetensors, or set "
                 "model.allow_pickle=true if you trust the source"])
        if (path / "config.json").is_file() and not mcfg.trust_remote_code:
            auto_map = json.loads((path / "config.json").read_text()).get("auto_map")
            if auto_map:
                raise ConfigError(f"model.name_or_path: {ref} needs custom code from the model repo "
                                  f"(auto_map: {', '.join(auto_map)})",
                                  ["set model.trust_remote_code=true only if you trust that code"])
        if has_safe:
            read_weight_shapes(path)  # a truncated or corrupt file fails here, before any loading
    return ref


# ---------------------------------------------------------------- weights, read from headers only
# safetensors' safe_open reads a file's header alone (every tensor's name, dtype, shape and byte
# range) and checks that the file covers those ranges, so names, shapes and truncation are checked
# in milliseconds, with no torch and no weights loaded.

def _weight_shapes(file: Path) -> dict[str, list[int]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="numpy") as fh:
            return {name: fh.get_slice(name).get_shape() for name in fh.keys()}
    except SafetensorError as exc:
        if "not fully covered" in str(exc):
            need = _size_from_header(file)
            says = f"the header says {need:,}" if need else "shorter than its header says"
            raise ConfigError(f"{file}: truncated ({file.stat().st_size:,} bytes, {says})",
                              ["the download or copy was cut short: fetch the model again"]) from None
        raise ConfigError(f"{file}: not a valid safetensors file ({exc})",
                          ["the download or copy is broken: fetch the model again"]) from None


def _size_from_header(file: Path) -> int | None:
    """The file size a safetensors header promises: 8 + header length + the end of the last tensor."""
    import struct

    try:
        with open(file, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        return 8 + n + max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
        return None


def read_weight_shapes(model_dir: Path) -> dict[str, list[int]]:
    """tensor name -> shape for every *.safetensors file in `model_dir` (empty when there are none)."""
    shapes: dict[str, list[int]] = {}
    for file in sorted(Path(model_dir).glob("*.safetensors")):
        shapes.update(_weight_shapes(file))
    return shapes


def check_target_modules(ref: str, targets) -> None:
    """lora.target_modules must name modules of the base (peft's rule: the full name, or its last
    dotted parts); checked from the local weight names so a typo fails before the run dir exists."""
    path = Path(ref)
    if targets == "all-linear" or not path.is_dir():
        return
    modules = {name.rsplit(".", 1)[0] for name, shape in read_weight_shapes(path).items()
               if name.endswith(".weight") and len(shape) == 2}
    if not modules:
        return
    missing = [t for t in targets if not any(m == t or m.endswith(f".{t}") for m in modules)]
    if missing:
        names = sorted({m.rsplit(".", 1)[-1] for m in modules})
        raise ConfigError(f"lora.target_modules: {', '.join(missing)} not found in {ref}",
                          [f"modules with 2-D weights in this model: {', '.join(names)}",
                           "fix the names, or use lora.target_modules=all-linear"])


_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.(?P<part>lora_A|lora_B)(?:\.[^.]+)?\.weight$")


def check_adapter_base(adapter_dir: Path, base_ref: str, allow_pickle: bool = False) -> None:
    """Refuse a pickle adapter (unless allowed) and an adapter whose LoRA matrices do not fit the
    base (trained on another model).

    Linear weights are [out, in] and GPT-2's Conv1D [in, out]; lora_A is [r, in] and lora_B
    [out, r]. Both files are read from their headers only."""
    adapter_dir, base = Path(adapter_dir), Path(base_ref)
    if not list(adapter_dir.glob("*.safetensors")):
        pickles = sorted(p.name for p in adapter_dir.iterdir() if p.name.endswith(PICKLE_SUFFIXES))
        if pickles and not allow_pickle:
            raise UserError(f"{adapter_dir}: the adapter has only pickle weights ({', '.join(pickles[:3])})",
                            ["pickle files can run arbitrary code when loaded; convert the adapter to "
                             "safetensors, or set model.allow_pickle=true in the run's config if you trust it"])
        return
    if not base.is_dir():
        return  # a Hub base: nothing local to compare with; peft checks shapes when it loads
    base_shapes = read_weight_shapes(base)
    if not base_shapes or _is_prequantized(base):
        return
    dims: dict[str, dict[str, int]] = {}
    for key, shape in read_weight_shapes(adapter_dir).items():
        m = _LORA_KEY.match(key)
        if m and len(shape) == 2:
            d = dims.setdefault(m["module"], {})
            d["in" if m["part"] == "lora_A" else "out"] = shape[1] if m["part"] == "lora_A" else shape[0]
    # Modules missing from the base are a mismatch only when none is found (another architecture);
    # a few missing names can be checkpoint-key renames of transformers 5, which peft resolves.
    found = {m: base_shapes[f"{m}.weight"] for m in dims if f"{m}.weight" in base_shapes}
    problem = None
    if dims and not found:
        module = sorted(dims)[0]
        problem = f"{module} is not a module of the base {base_ref}"
    for module, shape in sorted(found.items()):
        want = (dims[module].get("out"), dims[module].get("in"))
        if tuple(shape) not in (want, want[::-1]):
            problem = (f"{module} expects a weight of [{want[0]}, {want[1]}], "
                       f"the base {base_ref} has {list(shape)}")
            break
    if problem:
        raise UserError(f"{adapter_dir}: this adapter was trained on a different base model: {problem}",
                        [f"the adapter records its base as {_recorded_base(adapter_dir)!r} (adapter_config.json "
                         "base_model_name_or_path); use that base, or retrain the adapter on this one"])


def _recorded_base(adapter_dir: Path) -> str | None:
    cfg = adapter_dir / "adapter_config.json"
    return json.loads(cfg.read_text()).get("base_model_name_or_path") if cfg.is_file() else None


def _is_prequantized(model_dir: Path) -> bool:
    cfg = model_dir / "config.json"
    return cfg.is_file() and "quantization_config" in json.loads(cfg.read_text())


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
    tok = open_tokenizer(ref, mcfg.revision, mcfg.trust_remote_code)
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


# bitsandbytes' AVX512-BF16 CPU kernel repacks a 4-bit weight in blocks of 32 output rows and reads
# its scales per quantization block of the input: layers whose out_features is not a multiple of 32,
# or whose in_features is not a multiple of the block size, crash inside bitsandbytes ("shape
# '[32, 0]' is invalid ...") the first time they run without gradients (evaluation, generation).
AVX512_BF16_ROWS = 32


def cpu_4bit_kernel_fits(out_features: int, in_features: int, blocksize: int) -> bool:
    """Whether bitsandbytes' packed AVX512-BF16 CPU kernel can take a 4-bit layer of this shape."""
    return out_features % AVX512_BF16_ROWS == 0 and in_features % blocksize == 0


def keep_4bit_layers_off_unfit_cpu_kernel(model) -> list[str]:
    """Route 4-bit layers the packed CPU kernel can't take to bitsandbytes' generic CPU path (the one
    every CPU without AVX512-BF16 uses): they stay 4-bit and give the same results. On CPUs without
    AVX512-BF16 bitsandbytes never sets the flag, so this changes nothing. Returns the layers moved."""
    import bitsandbytes as bnb

    moved = []
    for name, module in model.named_modules():
        if not isinstance(module, bnb.nn.Linear4bit) or not getattr(module, "support_avx512bf16_for_cpu", False):
            continue
        blocksize = module.weight.quant_state.blocksize
        if not cpu_4bit_kernel_fits(module.out_features, module.in_features, blocksize):
            module.support_avx512bf16_for_cpu = False
            moved.append(name)
    return moved


def use_training_attention(model, cfg: Config, device: Device) -> str | None:
    """Packed rows on CPU with no model.attn_implementation chosen: per-document SDPA
    (lmtune/train/packed_attention.py), same results, 1.09x the tokens/s on the embedded base. Only for
    training: generation and evaluation keep the model's default. Returns the kernel set, if any."""
    if cfg.model.attn_implementation or not cfg.data.packing or device.kind != "cpu":
        return None
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return None        # eager/flex models, or remote code without SDPA: leave them alone
    if not _plain_causal_layers(model.config.get_text_config()):
        return None

    name = register()
    model.set_attn_implementation(name)
    return name


def _plain_causal_layers(config) -> bool:
    """Every layer full causal attention: no sliding window or chunk that lives only in the mask."""
    if any(t != "full_attention" for t in (getattr(config, "layer_types", None) or [])):
        return False
    if getattr(config, "attention_chunk_size", None) or getattr(config, "use_sliding_window", False):
        return False
    return True


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
        # one GPU per process: under DDP each rank loads its 4-bit copy on its own device
        local = int(os.environ.get("LOCAL_RANK", 0))
        kwargs["device_map"] = {"": local} if device.kind == "cuda" else {"": "cpu"}
        # bitsandbytes' CPU backend runs 4-bit matmuls in fp32 compute; keep non-quantized parts there too.
        if device.kind == "cpu":
            kwargs["dtype"] = torch_dtype("fp32")
    model = AutoModelForCausalLM.from_pretrained(ref, **kwargs)
    if quantize and device.kind == "cpu":
        keep_4bit_layers_off_unfit_cpu_kernel(model)
    if tokenizer is not None and len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    if tokenizer is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if model.generation_config is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model

