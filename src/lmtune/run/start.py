"""A run as the start of another: `model.name_or_path: RUN_DIR` (the usual path SFT -> DPO).

A full run starts the next from its model/; an adapter run from its base with the adapter merged
in, in memory (nothing is written), so the next run's LoRA trains on top of what the first learnt.
The base of an adapter run may itself be a run: the chain is followed. The next run's template is
the first run's (template.json), and it records where it started (started_from.json).

Everything that opens a model reference for training or inference goes through `check_source`,
`load_tokenizer` and `load_model` here, which hand anything that is not a run to models.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from lmtune import models
from lmtune.config import ModelConfig, from_dict, read_yaml
from lmtune.errors import ConfigError
from lmtune.run.layout import write_json

STARTED_FROM = "started_from.json"


def source_run(ref: str) -> Path | None:
    """`ref` as a run directory (config.yaml and adapter/ or model/), else None."""
    p = Path(ref).expanduser()
    if (p / "config.yaml").is_file() and ((p / "adapter").is_dir() or (p / "model").is_dir()):
        return p.resolve()
    return None


def _base_of(run: Path) -> str:
    """The resolved base an adapter run trained on (its config.yaml)."""
    name = from_dict(read_yaml(run / "config.yaml"), str(run / "config.yaml")).model.name_or_path
    return models.resolve_model_path(name)


def _check_weights(directory: Path, expected: str) -> None:
    if not any(directory.glob("*.safetensors")):
        raise ConfigError(f"model.name_or_path: {directory / expected}: missing (no weight file in {directory})",
                          ["the run's weights are incomplete: copy the run again, or retrain it"])
    models.read_weight_shapes(directory)   # a truncated or corrupt file: ConfigError naming it


def check_source(mcfg: ModelConfig) -> str:
    """models.check_model_source, and for a run directory: its weight headers and its base's,
    before any loading. Returns the resolved reference (a run as its absolute path)."""
    ref = models.resolve_model_path(mcfg.name_or_path)
    run = source_run(ref)
    if run is None:
        return models.check_model_source(mcfg)
    if (run / "model").is_dir():
        _check_weights(run / "model", "model.safetensors")
    else:
        _check_weights(run / "adapter", "adapter_model.safetensors")
        check_source(dataclasses.replace(mcfg, name_or_path=_base_of(run)))
    return str(run)


def architecture_dir(ref: str) -> str:
    """The directory whose config.json and weight headers describe `ref`'s architecture: a full
    run's model/, an adapter run's base (followed through runs); `ref` itself otherwise."""
    run = source_run(ref)
    if run is None:
        return ref
    return str(run / "model") if (run / "model").is_dir() else architecture_dir(_base_of(run))


def load_tokenizer(ref: str, mcfg: ModelConfig):
    """The tokenizer a run saved with its weights, or models.load_tokenizer's."""
    run = source_run(ref)
    if run is not None:
        ref = str(run / "adapter") if (run / "adapter").is_dir() else str(run / "model")
    return models.load_tokenizer(ref, mcfg)


def load_model(ref: str, cfg, device, tokenizer=None, quantize: bool = False):
    """models.load_model, and for a run directory its weights as a plain transformers model:
    model/ of a full run; the base with the adapter merged of an adapter run."""
    run = source_run(ref)
    if run is None:
        return models.load_model(ref, cfg, device, tokenizer, quantize)
    if (run / "model").is_dir():
        return models.load_model(str(run / "model"), cfg, device, tokenizer, quantize)
    if quantize:
        raise ConfigError(f"model.name_or_path: {run} is an adapter run; merging it into a 4-bit base would "
                          "round the merged weights",
                          [f"use method lora, or merge it first (lmtune merge {run} --out DIR) and start "
                           "from DIR"])
    from peft import PeftModel

    base = _base_of(run)
    base_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=base))
    model = load_model(base, base_cfg, device, tokenizer)
    return PeftModel.from_pretrained(model, str(run / "adapter")).merge_and_unload()


def template_of(run: Path) -> dict | None:
    path = run / "template.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def record(run_root: Path, ref: str) -> None:
    """started_from.json in the new run: the run it started from, its weights, steps and objective."""
    run = source_run(ref)
    if run is None:
        return
    summary = run / "train_summary.json"
    steps = json.loads(summary.read_text()).get("global_step") if summary.is_file() else None
    objective = from_dict(read_yaml(run / "config.yaml"), str(run / "config.yaml")).train.objective
    write_json(run_root / STARTED_FROM, {
        "run": str(run), "weights": "model" if (run / "model").is_dir() else "adapter merged into its base",
        "global_step": steps, "objective": objective})
