"""A run as the start of another: `model.name_or_path: RUN_DIR` (the usual path SFT -> DPO).

A full run starts the next from its model/; an adapter run from its base with the adapter merged
in, in memory (nothing is written), so the next run's LoRA trains on top of what the first learnt.
The base of an adapter run may itself be a run: the chain is followed. The next run's template is
the first run's (template.json), and it records where it started (started_from.json).
"""

from __future__ import annotations

import json
from pathlib import Path

from lmtune.errors import ConfigError

STARTED_FROM = "started_from.json"


def source_run(ref: str) -> Path | None:
    """`ref` as a run directory (config.yaml and adapter/ or model/), else None."""
    p = Path(ref).expanduser()
    if (p / "config.yaml").is_file() and ((p / "adapter").is_dir() or (p / "model").is_dir()):
        return p.resolve()
    return None


def _open(run: Path):
    from lmtune.inference_loading import open_path

    return open_path(str(run))    # checks every weight header of the run (and its base) first


def architecture_dir(ref: str) -> str:
    """The directory whose config.json and weight headers describe `ref`'s architecture: a full
    run's model/, an adapter run's base (followed through runs); `ref` itself otherwise."""
    run = source_run(ref)
    if run is None:
        return ref
    loaded = _open(run)
    return str(loaded.model_dir) if loaded.model_dir is not None else architecture_dir(loaded.base_ref)


def tokenizer_dir(run: Path) -> str:
    return str(run / "adapter") if (run / "adapter").is_dir() else str(run / "model")


def load_start(run: Path, cfg, device, tokenizer, quantize: bool):
    """The run's weights as a plain transformers model: model/ of a full run; the base with the
    adapter merged of an adapter run."""
    import dataclasses

    from lmtune import models

    loaded = _open(run)
    if loaded.model_dir is not None:
        return models.load_model(str(loaded.model_dir), cfg, device, tokenizer, quantize)
    if quantize:
        raise ConfigError(f"model.name_or_path: {run} is an adapter run; merging it into a 4-bit base would "
                          "round the merged weights",
                          [f"use method lora, or merge it first (lmtune merge {run} --out DIR) and start "
                           "from DIR"])
    from peft import PeftModel

    base_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name_or_path=loaded.base_ref))
    base = models.load_model(loaded.base_ref, base_cfg, device, tokenizer, quantize=False)
    return PeftModel.from_pretrained(base, str(loaded.adapter_dir)).merge_and_unload()


def template_of(run: Path) -> dict | None:
    path = run / "template.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def record(run_root: Path, ref: str) -> None:
    """started_from.json in the new run: the run it started from, its weights and its steps."""
    from lmtune.run.layout import write_json

    run = source_run(ref)
    if run is None:
        return
    summary = run / "train_summary.json"
    steps = json.loads(summary.read_text()).get("global_step") if summary.is_file() else None
    from lmtune.config import from_dict, read_yaml

    objective = from_dict(read_yaml(run / "config.yaml"), str(run / "config.yaml")).train.objective
    write_json(run_root / STARTED_FROM, {
        "run": str(run), "weights": "model" if (run / "model").is_dir() else "adapter merged into its base",
        "global_step": steps, "objective": objective})
