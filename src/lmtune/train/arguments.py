"""The config as TRL/transformers training arguments: what every objective's trainer shares
(common_arguments), SFT's own fields (training_arguments), the processes' fields and the optimizer."""

from __future__ import annotations

import os
import sys

from lmtune.config import Config
from lmtune.run.layout import RunDir
from lmtune.train.distributed import trainer_arguments


def training_arguments(cfg: Config, run: RunDir, precision: str, device_kind: str, has_eval: bool):
    """Map lmtune's config onto TRL's SFTConfig (transformers 5 names)."""
    from trl import SFTConfig

    return SFTConfig(
        **common_arguments(cfg, run, precision, device_kind, has_eval),
        max_length=cfg.data.max_length,
        packing=cfg.data.packing,
        packing_strategy="bfd",
        completion_only_loss=not cfg.data.train_on_prompt,
        dataset_num_proc=None,
        remove_unused_columns=True,
    )


def common_arguments(cfg: Config, run: RunDir, precision: str, device_kind: str, has_eval: bool) -> dict:
    """The transformers TrainingArguments every objective's TRL config shares (SFT, DPO, ORPO, KTO)."""
    t = cfg.train
    eval_steps, save_steps = t.eval_steps, t.save_steps
    if t.load_best and has_eval:
        # keeping the best checkpoint needs an evaluation at every save: one count set alone
        # serves for both (preflight already refused counts that disagree)
        eval_steps, save_steps = eval_steps or save_steps, save_steps or eval_steps
    per_epoch = "steps" if eval_steps else "epoch"
    save_per = "steps" if save_steps else "epoch"
    optimizer = choose_optimizer(cfg, device_kind)
    warmup = t.warmup_steps if t.warmup_steps > 0 else t.warmup_ratio
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run / "tensorboard")
    return dict(
        output_dir=str(run.checkpoints),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=t.micro_batch(device_kind),
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accum,
        warmup_steps=warmup,
        lr_scheduler_type=t.scheduler,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        optim=optimizer,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device_kind == "cpu",
        # transformers 5.24 renamed gradient_checkpointing; TRL's default for it is True, so set it explicitly.
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        eval_strategy=per_epoch if has_eval else "no",
        eval_steps=eval_steps,
        save_strategy=save_per,
        save_steps=save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=t.load_best and has_eval,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        seed=t.seed,
        data_seed=t.seed,
        report_to=["tensorboard"],
        dataloader_num_workers=0,
        disable_tqdm=False,
        **distributed_arguments(cfg, device_kind),
    )


def distributed_arguments(cfg: Config, device_kind: str) -> dict:
    """SFTConfig fields for DDP/FSDP/DeepSpeed (empty in a single process): lmtune/train/distributed.py."""
    return trainer_arguments(cfg, device_kind)


def choose_optimizer(cfg: Config, device_kind: str) -> str:
    """auto: paged 8-bit AdamW for QLoRA on CUDA (the QLoRA paper's choice), AdamW elsewhere.
    Paged optimizers page state to CPU memory on CUDA only; on CPU we say what runs instead."""
    opt = cfg.train.optimizer
    if opt == "auto":
        if cfg.method == "qlora" and device_kind == "cuda":
            return "paged_adamw_8bit"
        if cfg.method == "qlora":
            print("note: qlora on CPU trains with adamw_torch (32-bit); paged_adamw_8bit needs CUDA",
                  file=sys.stderr)
        # fused AdamW on CUDA avoids a per-step fp32 copy of one optimizer state (4 bytes/param,
        # measured by the estimate helper); on CPU plain AdamW is the measured baseline.
        return "adamw_torch_fused" if device_kind == "cuda" else "adamw_torch"
    if opt.startswith("paged_") and device_kind != "cuda":
        print(f"note: {opt} pages optimizer state only on CUDA; on CPU bitsandbytes runs it unpaged",
              file=sys.stderr)
    return opt
