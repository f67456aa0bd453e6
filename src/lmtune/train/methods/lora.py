"""LoRA through peft: the base is frozen, low-rank A/B matrices train on the target modules.
'all-linear' is peft's own selector (every Linear/Conv1D except the output head), which covers
Llama, Qwen2, Mistral, GPT-2 and Phi without per-architecture name lists."""

from __future__ import annotations

from lmtune.config import Config
from lmtune.errors import ConfigError


def lora_config(cfg: Config):
    from peft import LoraConfig

    lc = cfg.lora
    return LoraConfig(
        r=lc.r,
        lora_alpha=lc.alpha,
        lora_dropout=lc.dropout,
        target_modules=lc.target_modules,
        bias=lc.bias,
        use_dora=lc.use_dora,
        use_rslora=lc.use_rslora,
        task_type="CAUSAL_LM",
    )


def attach(model, cfg: Config):
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(cfg))
    except ValueError as exc:  # peft: "Target modules {...} not found in the base model"
        if "not found" not in str(exc) and "Target module" not in str(exc):
            raise
        import torch
        from transformers.pytorch_utils import Conv1D

        # bitsandbytes' Linear4bit/Linear8bitLt are torch Linear subclasses; GPT-2 uses Conv1D
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                        if isinstance(m, (torch.nn.Linear, Conv1D))})
        raise ConfigError(f"lora.target_modules: {cfg.lora.target_modules} not found in this model",
                          [f"linear layers in this model: {', '.join(names)}", "or use all-linear"]) from None


def prepare(model, cfg: Config):
    if cfg.train.gradient_checkpointing:
        # Frozen embeddings give checkpointed blocks inputs without grad; this hook keeps the graph alive.
        model.enable_input_require_grads()
    return attach(model, cfg)
