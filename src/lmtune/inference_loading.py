"""Open what `lmtune train` left behind: a run directory, an adapter, a merged or a base model.

One place decides what a path is and how to load it for inference, so that generate, eval,
merge, export and serve all see the same model and the same template the run trained with, and
all refuse the same way (exit 2, naming the file) weights that are missing or cut short: open_path
checks every safetensors header and size it will load, in milliseconds, before any output exists.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lmtune import models
from lmtune.config import Config, from_dict, read_yaml
from lmtune.errors import UserError
from lmtune.models import check_adapter_base, resolve_model_path
from lmtune.run import start
from lmtune.run.start import source_run


@dataclass
class Loaded:
    kind: str               # "run" | "adapter" | "model"
    base_ref: str           # resolved base model path/id
    adapter_dir: Path | None
    model_dir: Path | None  # full fine-tune or merged model
    config: Config | None   # the run's resolved config, when there is one
    template: dict | None   # saved template (Template.to_dict())


def open_path(path: str, weights: bool = True) -> Loaded:
    """Classify `path` (run dir, adapter dir, model dir or 'tiny'/Hub id) and check its weight files
    (check_weights) without loading them. weights=False: the caller checks its own arguments
    first (merge, export: --out) and calls check_weights itself, before writing anything."""
    loaded = _classify(path)
    if weights:
        check_weights(loaded)
    return loaded


def check_weights(loaded: Loaded) -> None:
    """The adapter, model and local base weights `loaded` stands for exist and are whole: every
    shard an index names is there, every safetensors header parses and its data fits the file."""
    if loaded.adapter_dir is not None:
        _check_weight_dir(loaded.adapter_dir, "adapter_model.safetensors")
    if source_run(loaded.base_ref) is not None:   # a run that started from another run
        check_weights(_classify(loaded.base_ref))
        base = None
    else:
        base = Path(loaded.base_ref) if Path(loaded.base_ref).is_dir() else None
    for directory in {loaded.model_dir, base} - {None}:
        _check_weight_dir(Path(directory), "model.safetensors")


def _check_weight_dir(directory: Path, expected: str) -> None:
    fix = ["the run's weights are incomplete: copy the run again, or retrain it"]
    index = directory / f"{expected}.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()))
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UserError(f"{index}: not a valid safetensors index (no weight_map)", fix) from None
        missing = [s for s in shards if not (directory / s).is_file()]
        if missing:
            raise UserError(f"{directory / missing[0]}: missing ({len(missing)} of {len(shards)} weight shards)", fix)
    elif not any(directory.glob("*.safetensors")):
        pickles = [p for p in directory.iterdir() if p.name.endswith(models.PICKLE_SUFFIXES)]
        if not pickles:
            raise UserError(f"{directory / expected}: missing (no weight file in {directory})", fix)
        return   # pickle weights: refused or allowed by models.check_model_source / check_adapter_base
    models.read_weight_shapes(directory)   # a truncated or corrupt file: ConfigError naming it


def _classify(path: str) -> Loaded:
    p = Path(path)
    if (p / "config.yaml").is_file() and ((p / "adapter").is_dir() or (p / "model").is_dir()):
        cfg = from_dict(read_yaml(p / "config.yaml"), str(p / "config.yaml"))
        template = _read_json(p / "template.json")
        if (p / "adapter").is_dir():
            return Loaded("run", resolve_model_path(cfg.model.name_or_path), p / "adapter", None, cfg, template)
        return Loaded("run", str(p / "model"), None, p / "model", cfg, template)
    if (p / "adapter_config.json").is_file():
        base = json.loads((p / "adapter_config.json").read_text())["base_model_name_or_path"]
        return Loaded("adapter", resolve_model_path(base), p, None, None, _read_json(p / "lmtune_template.json"))
    if p.is_dir() and (p / "config.json").is_file():
        return Loaded("model", str(p), None, p, None, _read_json(p / "lmtune_template.json"))
    if p.exists():
        raise UserError(f"{path}: not a run, adapter or model directory",
                        ["expected a run directory (config.yaml + adapter/ or model/), an adapter "
                         "(adapter_config.json) or a model (config.json)"])
    return Loaded("model", resolve_model_path(path), None, None, None, None)


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def cached_hub_model(name: str) -> Path:
    """A Hub model id -> its snapshot folder in the local Hugging Face cache, never downloading
    (HF_HUB_OFFLINE or not): for commands that read files by path, such as export."""
    from huggingface_hub import constants, snapshot_download

    fix = [f"download it first (hf download {name}), or give a run directory, an adapter or a model folder"]
    try:
        snapshot = Path(snapshot_download(name, local_files_only=True))
    except Exception as exc:  # LocalEntryNotFoundError, or a malformed id (HFValidationError)
        raise UserError(f"{name}: no such folder, and not in the local Hugging Face cache "
                        f"({constants.HF_HUB_CACHE}; {type(exc).__name__})", fix) from None
    if not (snapshot / "config.json").is_file() or not any(snapshot.glob("*.safetensors")):
        raise UserError(f"{name}: only part of it is in the Hugging Face cache ({snapshot} has no config.json "
                        "or no *.safetensors weights)", fix)
    return snapshot


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def load_for_inference(loaded: Loaded, use_adapter: bool = True, quantized: bool | None = None):
    """(model, tokenizer) in eval mode. For a QLoRA run, `quantized` (default: as trained) loads the
    base in 4-bit again; otherwise the base is loaded in fp32 on CPU / its 16-bit dtype on GPU."""
    cfg = loaded.config or Config()
    cfg.model.name_or_path = loaded.base_ref
    start.check_source(cfg.model)   # a run the run continued from: checked as a run
    if use_adapter and loaded.adapter_dir is not None:
        check_adapter_base(loaded.adapter_dir, loaded.base_ref, allow_pickle=cfg.model.allow_pickle)
    device = models.detect_device()
    tok_src = str(loaded.adapter_dir or loaded.model_dir or loaded.base_ref)
    tokenizer = start.load_tokenizer(tok_src, cfg.model)
    if quantized is None:
        quantized = cfg.method == "qlora" and use_adapter and loaded.adapter_dir is not None
    model = start.load_model(loaded.base_ref, cfg, device, tokenizer, quantize=quantized)
    if use_adapter and loaded.adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(loaded.adapter_dir))
    if device.kind == "cuda" and not quantized:
        model = model.to("cuda")
    model.eval()
    return model, tokenizer
