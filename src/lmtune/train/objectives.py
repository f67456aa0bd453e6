"""Preference objectives (train.objective dpo, orpo, kto) on TRL's trainers, for any method.

    dpo   trl.DPOTrainer                  pairs, against a reference model
    orpo  trl.experimental.orpo.ORPOTrainer  pairs, no reference (answer loss + odds ratio)
    kto   trl.KTOTrainer                  single answers labelled good or bad, against a reference

The reference model: with LoRA/QLoRA, the model with its adapter disabled (the new adapter starts
as a no-op, lora_B = 0, so that is the start exactly) and no second copy of anything; with full
fine-tuning, a frozen copy of the starting weights, taken before the first step.
"""

from __future__ import annotations

import copy

from lmtune.config import Config
from lmtune.data.preference import PARTIAL

PREFERENCE = ("dpo", "orpo", "kto")
# after TRL's tokenization, the columns that hold a pair's rejected answer (each ends with the eos TRL adds)
REJECTED_COLUMNS = {"dpo": ("rejected_ids",),
                    "orpo": ("rejected_input_ids", "rejected_attention_mask", "rejected_labels")}
# TRL's name for the chosen-vs-rejected numbers lmtune's report shows next to the loss
REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies")


def objective_config(cfg: Config, common: dict):
    """TRL's config for cfg.train.objective, from the arguments every objective shares."""
    p, obj = cfg.pref, cfg.train.objective
    common = {**common, "max_length": cfg.data.max_length, "remove_unused_columns": False}
    if obj == "dpo":
        from trl import DPOConfig

        # pref.sft_weight > 0: TRL's "sft" loss (the chosen answers' NLL) beside the preference loss, so
        # that DPO cannot win by making chosen and rejected alike unlikely (RPO; LLaMA-Factory's pref_ftx)
        losses = [p.loss_type, "sft"] if p.sft_weight > 0 else [p.loss_type]
        weights = [1.0, p.sft_weight] if p.sft_weight > 0 else None
        return DPOConfig(**common, beta=p.beta, loss_type=losses, loss_weights=weights,
                         label_smoothing=p.label_smoothing)
    if obj == "kto":
        from trl import KTOConfig

        return KTOConfig(**common, beta=p.beta, desirable_weight=p.desirable_weight,
                         undesirable_weight=p.undesirable_weight)
    from trl.experimental.orpo import ORPOConfig

    return ORPOConfig(**common, beta=p.beta)


def trainer_class(objective: str):
    if objective == "dpo":
        from trl import DPOTrainer

        return DPOTrainer
    if objective == "kto":
        from trl import KTOTrainer

        return KTOTrainer
    from trl.experimental.orpo import ORPOTrainer

    return ORPOTrainer


def reference_copy(model, cfg: Config):
    """Full fine-tuning under dpo/kto/grpo: a frozen copy of the starting weights (TRL would otherwise
    load the reference again from model.config's path, which is not the start when the run
    continues from another run). LoRA/QLoRA and orpo: None (no copy)."""
    if cfg.method != "full" or cfg.train.objective == "orpo":
        return None
    if cfg.train.objective == "grpo" and cfg.rl.beta == 0:   # no KL term: no reference
        return None
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def build(cfg: Config, args, model, ref_model, tokenizer, train, validation, callbacks):
    """The objective's TRL trainer; for a peft model, the reference is the adapter switched off."""
    kwargs = {"ref_model": ref_model} if cfg.train.objective != "orpo" else {}
    trainer = trainer_class(cfg.train.objective)(
        model=model, args=args, train_dataset=train, eval_dataset=validation,
        processing_class=tokenizer, callbacks=callbacks, **kwargs)
    peft_config = getattr(trainer.model, "peft_config", None)
    if peft_config is not None and "ref" in peft_config:
        # TRL copies a wrapped model's adapter as "ref" in case it was pretrained; lmtune's adapter
        # is new and zero, so the adapter switched off is the same reference without the copy
        trainer.model.delete_adapter("ref")
        trainer.model.set_adapter("default")
    eos = tokenizer.eos_token_id
    trainer.train_dataset = open_partial(trainer.train_dataset, cfg.train.objective, eos)
    trainer.eval_dataset = open_partial(trainer.eval_dataset, cfg.train.objective, eos)
    return trainer


def open_partial(dataset, objective: str, eos_id: int):
    """Pairs marked rejected_partial (data/preference.py): take off the eos TRL appended to the rejected
    answer, so that it ends at its mistake and DPO/ORPO score no end the model would never write there."""
    columns = REJECTED_COLUMNS.get(objective)
    if dataset is None or columns is None or PARTIAL not in dataset.column_names or not any(dataset[PARTIAL]):
        return dataset

    def strip(row):
        cut = row[PARTIAL] and len(row[columns[0]]) > 1 and row[columns[0]][-1] == eos_id
        return {c: row[c][:-1] if cut else row[c] for c in columns}

    return dataset.map(strip)
