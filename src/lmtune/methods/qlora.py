"""QLoRA: a 4-bit (NF4/FP4, double-quantized) frozen base from bitsandbytes, prepared with peft's
prepare_model_for_kbit_training (norms in fp32, input grads on), then LoRA on top."""

from __future__ import annotations

from lmtune.config import Config
from lmtune.methods.lora import attach


def prepare(model, cfg: Config):
    from peft import prepare_model_for_kbit_training

    model = prepare_model_for_kbit_training(
        model,
        use_gradient_checkpointing=cfg.train.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
    )
    return attach(model, cfg)
