"""QLoRA: a 4-bit (NF4/FP4, double-quantized) frozen base from bitsandbytes, then LoRA on top.

What stays out of 4-bit (embeddings, norms, LM head) keeps the dtype the base was loaded in: bf16
on a bf16 GPU, fp32 on CPU. peft's prepare_model_for_kbit_training would upcast all of it to fp32,
which for Llama-3.1-8B doubles 2.1 GB of embeddings + head into 4.2 GB and turns the residual
stream (the embedding output) fp32, so every saved hidden state costs twice as much. Nothing here
needs fp32 storage: the parameters are frozen, RMSNorm already computes its statistics in fp32
(transformers' LlamaRMSNorm), and autocast runs the matmuls in the compute dtype anyway. The LoRA
path on GPU trains on the same bf16 base. Measured in benchmarks/estimate_memory.py (the
"qlora-bf16" cases, peft's preparation next to this one).

fp16 is the exception: an fp16 residual stream can overflow, which is what peft's fp32 upcast
guards against, so an fp16 base still goes through peft's function."""

from __future__ import annotations

from lmtune.config import Config
from lmtune.train.methods.lora import attach
from lmtune.train.methods.lora import prepare as prepare_lora


def prepare(model, cfg: Config):
    import torch

    if model.get_input_embeddings().weight.dtype == torch.float16:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=cfg.train.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        return attach(model, cfg)
    # get_peft_model freezes the base; with checkpointing, the input-grad hook keeps the graph alive
    # (the Trainer enables checkpointing itself from train.gradient_checkpointing).
    return prepare_lora(model, cfg)
