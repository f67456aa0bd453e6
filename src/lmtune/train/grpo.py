"""train.objective grpo on TRL's GRPOTrainer: sample rl.num_generations answers per prompt, score
them with rl.reward (lmtune/rl/rewards.py), push up the better ones of each group.

The reference the KL term (rl.beta) measures against: with LoRA/QLoRA the model with its adapter
disabled (no copy); with full fine-tuning a frozen copy of the starting weights (objectives.py's
reference_copy), handed to TRL in place of the copy it would load again from the model's path,
which is not the start when the run continues from another run. rl.beta 0: no reference at all.
"""

from __future__ import annotations

import contextlib

from lmtune.config import Config
from lmtune.errors import ConfigError
from lmtune.generate import stop_ids_of
from lmtune.rl.rewards import reward_functions


def grpo_config(cfg: Config, common: dict):
    from trl import GRPOConfig

    rl = cfg.rl
    return GRPOConfig(**common, remove_unused_columns=False, num_generations=rl.num_generations,
                      max_completion_length=rl.max_new_tokens, temperature=rl.temperature, beta=rl.beta,
                      reward_weights=rl.reward_weights, **vllm_arguments(cfg))


def vllm_arguments(cfg: Config) -> dict:
    """rl.use_vllm and its settings as GRPOConfig arguments; an unset one keeps TRL's default."""
    rl = cfg.rl
    if not rl.use_vllm:
        return {}
    given = {"vllm_server_base_url": rl.vllm_server_base_url,
             "vllm_gpu_memory_utilization": rl.vllm_gpu_memory_utilization}
    return {"use_vllm": True, "vllm_mode": rl.vllm_mode, **{k: v for k, v in given.items() if v is not None}}


def check_vllm(cfg: Config) -> None:
    """rl.use_vllm needs the vllm package and CUDA: say so before any model loads (train's preflight),
    not in TRL's import error after the model and data are ready."""
    import importlib.util

    if not (cfg.train.objective == "grpo" and cfg.rl.use_vllm):
        return
    missing = []
    if importlib.util.find_spec("vllm") is None:
        missing.append("the vllm package is not installed (pip install vllm, on a machine with CUDA)")
    import torch

    if not torch.cuda.is_available():
        missing.append("no CUDA GPU is visible here (vLLM generates on a GPU only)")
    if missing:
        raise ConfigError("rl.use_vllm: true needs vLLM on a CUDA GPU", missing + [
            "set rl.use_vllm=false to sample with model.generate (batched, KV cache; works on CPU)"])


@contextlib.contextmanager
def _reference_instead_of_reload(module, reference):
    """TRL builds a full model's reference with create_model_from_path(model's path); hand it ours."""
    if reference is None:
        yield
        return
    original = module.create_model_from_path
    module.create_model_from_path = lambda *args, **kwargs: reference
    try:
        yield
    finally:
        module.create_model_from_path = original


def build(cfg: Config, args, model, reference, tokenizer, train, template, callbacks):
    import trl.trainer.grpo_trainer as grpo_module
    from trl import GRPOTrainer

    # sampling stops where `lmtune generate` stops: eos and the template's end of answer (<|im_end|>)
    model.generation_config.eos_token_id = stop_ids_of(tokenizer, model.generation_config, template)
    with _reference_instead_of_reload(grpo_module, reference):
        trainer = GRPOTrainer(model=model, reward_funcs=reward_functions(cfg, template), args=args,
                              train_dataset=train, processing_class=tokenizer, callbacks=callbacks)
    peft_config = getattr(trainer.model, "peft_config", None)
    if peft_config is not None and "ref" in peft_config:
        # as for dpo (objectives.py): lmtune's adapter is new and zero, the adapter off is the start
        trainer.model.delete_adapter("ref")
        trainer.model.set_adapter("default")
    return trainer
