"""The training recipe, top to bottom: setup -> train -> save.

Full, LoRA and QLoRA share this recipe; they differ only in `methods.prepare`. Underneath is TRL's
SFTTrainer on a pre-tokenized dataset (input_ids + completion_mask), so TRL builds the labels
(-100 on prompt tokens) and packs examples with best-fit decreasing.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from lmtune.config import Config
from lmtune.errors import UserError
from lmtune.rundir import RunDir, replace_dir, write_json, write_text


@dataclass
class TrainResult:
    run_dir: Path
    trainable_params: int
    total_params: int
    metrics: dict = field(default_factory=dict)


def train(cfg: Config, resume: bool = False, quiet: bool = False) -> TrainResult:
    """Fine-tune according to `cfg`; returns where everything went and the final metrics."""
    run = RunDir(cfg.output.dir)
    setup = _setup(cfg, run, resume)                       # checks, data, model: fail before training
    trainer = _build_trainer(cfg, run, setup)
    started = time.time()
    _fit(trainer, run, resume)
    metrics = _save(cfg, run, setup, trainer, time.time() - started)
    if not quiet:
        print(f"trainable params: {setup.trainable:,} of {setup.total:,} "
              f"({100 * setup.trainable / setup.total:.2f}%)")
    return TrainResult(run.root, setup.trainable, setup.total, metrics)


# ---------------------------------------------------------------- setup

@dataclass
class _Setup:
    model: object
    tokenizer: object
    template: object
    data: object
    device: object
    precision: str
    trainable: int
    total: int


def preflight(cfg: Config, run: RunDir, resume: bool):
    """Everything that can be checked before loading weights: output dir, model source, method support."""
    from lmtune.models import check_model_source

    run.check_writable(cfg.output.overwrite, resume)
    ref = check_model_source(cfg.model)
    if cfg.method == "qlora":
        from lmtune.methods.qlora_check import check_qlora_supported

        check_qlora_supported()
    return ref


def _setup(cfg: Config, run: RunDir, resume: bool) -> _Setup:
    from lmtune import methods
    from lmtune.data import prepare_datasets
    from lmtune.models import detect_device, load_model, load_tokenizer, resolve_precision, set_threads

    ref = preflight(cfg, run, resume)
    set_threads(cfg.train.threads)
    device = detect_device()
    precision = resolve_precision(cfg.train.precision, device)
    tokenizer = load_tokenizer(ref, cfg.model)
    data = prepare_datasets(cfg.data, tokenizer)  # raises DataError listing every bad record
    template = data.template
    if not resume:
        run.create(cfg.output.overwrite)
    model = load_model(ref, cfg, device, tokenizer, quantize=cfg.method == "qlora")
    model = methods.prepare(model, cfg)
    trainable, total = methods.count_parameters(model)
    _write_run_inputs(cfg, run, tokenizer, template, data)
    return _Setup(model, tokenizer, template, data, device, precision, trainable, total)


def _write_run_inputs(cfg: Config, run: RunDir, tokenizer, template, data) -> None:
    from lmtune.envinfo import collect_env

    write_text(run / "config.yaml", cfg.to_yaml())
    write_json(run / "data_stats.json", data.stats)
    write_json(run / "template.json", template.to_dict())
    write_json(run / "env.json", collect_env(cfg, data))


# ---------------------------------------------------------------- trainer

def training_arguments(cfg: Config, run: RunDir, precision: str, device_kind: str, has_eval: bool):
    """Map lmtune's config onto TRL's SFTConfig (transformers 5 names)."""
    from trl import SFTConfig

    t = cfg.train
    per_epoch = "steps" if t.eval_steps else "epoch"
    save_per = "steps" if t.save_steps else "epoch"
    if t.load_best and has_eval and t.eval_steps and t.save_steps and t.save_steps % t.eval_steps:
        from lmtune.errors import ConfigError

        raise ConfigError(f"train.save_steps: {t.save_steps} must be a multiple of train.eval_steps "
                          f"({t.eval_steps}) when train.load_best is on")
    optimizer = t.optimizer
    if optimizer == "auto":
        optimizer = "paged_adamw_8bit" if (cfg.method == "qlora" and device_kind == "cuda") else "adamw_torch"
    warmup = t.warmup_steps if t.warmup_steps > 0 else t.warmup_ratio
    os.environ["TENSORBOARD_LOGGING_DIR"] = str(run / "tensorboard")
    return SFTConfig(
        output_dir=str(run.checkpoints),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=t.batch_size,
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
        eval_steps=t.eval_steps,
        save_strategy=save_per,
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=t.load_best and has_eval,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        seed=t.seed,
        data_seed=t.seed,
        report_to=["tensorboard"],
        max_length=cfg.data.max_length,
        packing=cfg.data.packing,
        packing_strategy="bfd",
        completion_only_loss=not cfg.data.train_on_prompt,
        dataset_num_proc=None,
        dataloader_num_workers=0,
        remove_unused_columns=True,
        disable_tqdm=False,
    )


def _build_trainer(cfg: Config, run: RunDir, s: _Setup):
    from transformers import EarlyStoppingCallback
    from trl import SFTTrainer

    from lmtune.callbacks import MarkCheckpointComplete, MetricsJsonl, NonFiniteGuard

    has_eval = s.data.validation is not None and len(s.data.validation) > 0
    args = training_arguments(cfg, run, s.precision, s.device.kind, has_eval)
    callbacks = [MetricsJsonl(run / "metrics.jsonl"), NonFiniteGuard(), MarkCheckpointComplete()]
    if cfg.train.early_stopping_patience and has_eval:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    return SFTTrainer(
        model=s.model,
        args=args,
        train_dataset=s.data.train,
        eval_dataset=s.data.validation if has_eval else None,
        processing_class=s.tokenizer,
        callbacks=callbacks,
    )


def _fit(trainer, run: RunDir, resume: bool) -> None:
    checkpoint = None
    if resume:
        dropped = run.remove_partial_checkpoints()
        if dropped:
            print(f"ignored partial checkpoints: {', '.join(dropped)}")
        checkpoint = run.last_checkpoint()
        if checkpoint is None:
            print("no complete checkpoint to resume from: starting from step 0")
        else:
            print(f"resuming from {checkpoint.name}")
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    guard = next(cb for cb in trainer.callback_handler.callbacks if type(cb).__name__ == "NonFiniteGuard")
    if guard.bad:
        last = run.last_checkpoint()
        raise UserError(
            f"training stopped at step {guard.bad['step']}: {guard.bad['key']} became {guard.bad['value']}",
            ["likely causes: learning rate too high (lower train.learning_rate), fp16 overflow "
             "(use precision bf16 or fp32), or bad data",
             f"last good checkpoint: {last}" if last else "no checkpoint was saved before the failure"])


# ---------------------------------------------------------------- save

def _save(cfg: Config, run: RunDir, s: _Setup, trainer, seconds: float) -> dict:
    """Final weights in plain HF layout (adapter/ or model/), then eval.json. Each directory is
    written to a staging name first and renamed, so it is either whole or absent."""
    name = "model" if cfg.method == "full" else "adapter"
    staging = run.staging(name)
    trainer.model.save_pretrained(str(staging), safe_serialization=True)
    s.tokenizer.save_pretrained(str(staging))
    write_json(staging / "lmtune_template.json", s.template.to_dict())
    replace_dir(staging, run / name)
    metrics = {"method": cfg.method, "trainable_params": s.trainable, "total_params": s.total,
               "train_seconds": round(seconds, 2), "global_step": trainer.state.global_step,
               "peak_memory_mb": _peak_memory_mb()}
    train_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if train_losses:
        metrics["final_train_loss"] = train_losses[-1]
    if trainer.eval_dataset is not None:
        ev = trainer.evaluate()
        metrics["eval_loss"] = ev["eval_loss"]
        metrics["eval_perplexity"] = math.exp(min(ev["eval_loss"], 50.0))
    write_json(run / "train_summary.json", metrics)
    return metrics


def _peak_memory_mb() -> float:
    """Peak RSS of this process on CPU, or peak allocated CUDA memory."""
    import resource

    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB
