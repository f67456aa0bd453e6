"""A small catalogue for retrieval tests and a run directory over the embedded base that names it
as its rag.docs (an adapter with random weights, laid out as `lmtune train` leaves a LoRA run)."""

from __future__ import annotations

import json
from pathlib import Path

CATALOGUE = [
    {"id": "kettle", "text": "The Aurora kettle holds 1.7 litres, costs 49 euros and ships within 3 days."},
    {"id": "toaster", "text": "The Brisa toaster has four slots, costs 35 euros and ships within 5 days."},
    {"id": "blender", "text": "The Cumulus blender has a 900 watt motor, costs 89 euros and ships in 2 days."},
    {"id": "lamp", "text": "The Delta desk lamp uses a 7 watt LED bulb and costs 22 euros."},
    {"id": "returns", "text": "Any item can be returned within 30 days for a full refund of its price."},
]


def write_catalogue(path: Path, records: list[dict] = CATALOGUE) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def rag_run(root: Path, docs: Path | None, top_k: int = 2, seed: int = 1) -> Path:
    """root/run: config.yaml (rag.docs = docs) + adapter/ over the embedded base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmtune.config import from_dict
    from lmtune.models import resolve_model_path

    base = resolve_model_path("tiny")
    run = root / "run"
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(str(run / "adapter"))
    AutoTokenizer.from_pretrained(base).save_pretrained(str(run / "adapter"))
    rag = {"top_k": top_k, **({"docs": str(docs)} if docs else {})}
    cfg = from_dict({"model": {"name_or_path": "tiny"}, "data": {"task": "sql"}, "rag": rag})
    (run / "config.yaml").write_text(cfg.to_yaml())
    return run
