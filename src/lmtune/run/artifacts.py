"""What the saved artifacts say about themselves: the base an adapter names (portable: a Hub id,
'tiny', or a local directory's absolute path, never a path inside the installation) and the model
cards (README.md) of adapter/, each checkpoint and a merged model, filled with the base, the method,
the data, the steps and epochs that actually ran, and the metrics."""

from __future__ import annotations

import json
from pathlib import Path

from lmtune.models import EMBEDDED
from lmtune.run.layout import write_text

EMBEDDED_LOAD = """The base is lmtune's embedded `tiny` model, which ships inside the lmtune package. Without
lmtune's loader (plain transformers + peft), point at its directory:

```python
# the directory: python -c "from lmtune.models import embedded_model_dir; print(embedded_model_dir('tiny'))"
from transformers import AutoModelForCausalLM
from peft import PeftModel
base = AutoModelForCausalLM.from_pretrained("<that directory>")
model = PeftModel.from_pretrained(base, "<this directory>")
```
"""


def portable_base(name_or_path: str) -> str:
    """The name to record as an adapter's base: 'tiny' for the embedded base (plain peft cannot
    resolve a path inside someone else's installation), a local directory as an absolute path,
    else the Hub id as given."""
    if name_or_path in EMBEDDED:
        return name_or_path
    local = Path(name_or_path).expanduser()
    return str(local.resolve()) if local.exists() else name_or_path


def record_base(model, name_or_path: str) -> None:
    """Make every adapter save (checkpoints and the final one) record the portable base name."""
    for peft_cfg in getattr(model, "peft_config", {}).values():
        peft_cfg.base_model_name_or_path = portable_base(name_or_path)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, base): the base model's parameters (tied embeddings once, a 4-bit weight as its
    real element count, as peft counts) without the adapter matrices lmtune added, which are all
    trainable. `lmtune estimate` counts the same base number."""
    if hasattr(model, "get_nb_trainable_parameters"):
        trainable, total = model.get_nb_trainable_parameters()
    else:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
    added = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    return trainable, total - added


# ---------------------------------------------------------------- model cards

def _method(cfg) -> str:
    if cfg.method == "full":
        return "full fine-tuning (every weight trained)"
    lora = (f"LoRA r={cfg.lora.r}, alpha={cfg.lora.alpha}, dropout={cfg.lora.dropout}, "
            f"targets={cfg.lora.target_modules}" + (", DoRA" if cfg.lora.use_dora else ""))
    if cfg.method == "qlora":
        return f"QLoRA ({cfg.quant.type} 4-bit base, double quant {cfg.quant.double_quant}); {lora}"
    return lora


def _data(cfg) -> str:
    if cfg.data.task:
        return f"lmtune's bundled `{cfg.data.task}` task"
    return ", ".join(f"`{Path(p).name}`" for p in cfg.data.train) or "(none recorded)"


def _metrics_lines(summary: dict, evaluation: dict | None) -> list[str]:
    lines = []
    for key in ("final_train_loss", "eval_loss", "eval_perplexity"):
        if isinstance(summary.get(key), (int, float)):
            lines.append(f"- {key}: {summary[key]:.4g}")
    task = (evaluation or {}).get("task") or {}
    if task.get("tuned"):
        primary = task.get("primary")
        tuned, base = task["tuned"].get(primary), (task.get("base") or {}).get(primary)
        if tuned is not None:
            lines.append(f"- {task.get('name')} {primary}: {tuned:.4g} tuned"
                         + (f" vs {base:.4g} base" if base is not None else "")
                         + f" ({task.get('examples')} test examples)")
    forgetting = (evaluation or {}).get("forgetting") or {}
    if forgetting.get("verdict"):
        lines.append(f"- forgetting check: {forgetting['verdict']}")
    return lines or ["- none measured"]


def model_card(kind: str, cfg, steps: int, epochs: float | None, summary: dict | None = None,
               evaluation: dict | None = None, extra: list[str] | None = None) -> str:
    """README.md for `kind` ("adapter", "checkpoint", "merged model", "model")."""
    base = portable_base(cfg.model.name_or_path)
    tags = ["lmtune", cfg.method] + (["merged"] if kind == "merged model" else [])
    library = "peft" if kind in ("adapter", "checkpoint") and cfg.method != "full" else "transformers"
    ran = f"{steps} optimizer steps" + (f", {epochs:.3g} epochs" if epochs is not None else "")
    lines = ["---", f"library_name: {library}", f"base_model: {base}", f"tags: [{', '.join(tags)}]", "---", "",
             f"# lmtune {kind}", "", f"- base model: `{base}`", f"- method: {_method(cfg)}",
             f"- data: {_data(cfg)}", f"- training run: {ran} (what ran, not what was configured)",
             f"- learning rate: {cfg.learning_rate}, max_length: {cfg.data.max_length}", "",
             "## Metrics", "", *_metrics_lines(summary or {}, evaluation), ""]
    lines += extra or []
    if library == "peft":
        lines += ["## Loading", "", "```python", "from transformers import AutoModelForCausalLM",
                  "from peft import PeftModel",
                  f'base = AutoModelForCausalLM.from_pretrained("{base}")',
                  'model = PeftModel.from_pretrained(base, "<this directory>")', "```", ""]
    else:
        lines += ["## Loading", "", "`AutoModelForCausalLM.from_pretrained(\"<this directory>\")` "
                  "(plain transformers; no lmtune needed).", ""]
    if base == "tiny" and library == "peft":
        lines += [EMBEDDED_LOAD]
    return "\n".join(lines)


def checkpoint_card(cfg):
    """state -> README.md of a checkpoint (replacing peft's empty template): the card at that step."""

    def card(state) -> str:
        losses = [h["loss"] for h in state.log_history if "loss" in h]
        return model_card("checkpoint", cfg, state.global_step, state.epoch,
                          {"final_train_loss": losses[-1]} if losses else {})
    return card


def write_run_card(cfg, root: Path) -> None:
    """adapter/ or model/ README.md from what ran (train_summary.json) and eval.json when there is one."""
    summary = read_json(root / "train_summary.json") or {}
    name = "model" if cfg.method == "full" else "adapter"
    write_text(root / name / "README.md", model_card(name, cfg, summary.get("global_step", 0), summary.get("epochs"),
                                                     summary, read_json(root / "eval.json")))


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except ValueError:
        return None
