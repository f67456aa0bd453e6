"""The training recipe, top to bottom: setup -> train -> save.

Full, LoRA and QLoRA share this recipe; they differ only in `methods.prepare`. Underneath is TRL's
SFTTrainer on a pre-tokenized dataset (input_ids + completion_mask), so TRL builds the labels
(-100 on prompt tokens) and packs examples with best-fit decreasing.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import lmtune.data
from lmtune import models
from lmtune.checks import data_paths, max_length_fits, run_test_files
from lmtune.config import Config
from lmtune.data.holdout import HELDOUT_FILE, write_heldout
from lmtune.data.preference import data_size, prepare_preference
from lmtune.data.prepare import summary_line
from lmtune.data.templates import get_template, template_from_dict
from lmtune.errors import ConfigError, UserError
from lmtune.evaluate import final_evaluation
from lmtune.evaluate.run import validation_loss
from lmtune.evaluate.summary import summarize
from lmtune.models import check_target_modules, detect_device
from lmtune.report.build import write_report
from lmtune.run import process_record, start
from lmtune.run.artifacts import checkpoint_card, record_base, write_run_card
from lmtune.run.envinfo import collect_env
from lmtune.run.layout import RunDir, replace_dir, run_inputs, write_json, write_text
from lmtune.rl.prompts import prepare_prompts, prompt_data_size
from lmtune.rl.rewards import check_user_rewards
from lmtune.train.grpo import check_vllm as grpo_check_vllm
from lmtune.train import distributed, methods, objectives
from lmtune.train import resume as resuming
from lmtune.train.arguments import common_arguments, training_arguments
from lmtune.train.hparams import resolve_for_run
from lmtune.train.methods.qlora_check import check_qlora_supported
from lmtune.train.replay import add_replay
from lmtune.train.resume import check_resume_steps, resume_checkpoint, resume_conflicts, stop_at_of


@dataclass
class TrainResult:
    run_dir: Path
    trainable_params: int
    total_params: int
    metrics: dict = field(default_factory=dict)


def train(cfg: Config, resume: bool = False, quiet: bool = False, callbacks: list | None = None) -> TrainResult:
    """Fine-tune according to `cfg`; returns where everything went and the final metrics.
    `callbacks`: extra transformers TrainerCallbacks (the sweep's pruning report, lmtune/sweep/trial.py)."""
    run = RunDir(cfg.output.dir)
    finished = resuming.finished_summary(cfg, run, quiet) if resume else None
    if finished is not None:
        return TrainResult(run.root, finished.get("trainable_params", 0), finished.get("total_params", 0), finished)
    setup = _setup(cfg, run, resume)                       # checks, data, model: fail before training
    trainer = _build_trainer(cfg, run, setup, callbacks or [])
    started = time.time()
    _fit(trainer, run, resume, cfg.train.max_steps)
    metrics, val = _save(cfg, run, setup, trainer, time.time() - started)
    _finish_on_main(cfg, run, setup, trainer, metrics, quiet, val)
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
    reference: object = None   # full fine-tuning under dpo/kto: the frozen starting weights


def preflight(cfg: Config, run: RunDir, resume: bool):
    """Everything that can be checked before loading weights: output dir, model source (and the
    LoRA targets, from the weight headers), method support, rules that involve the data's shape.
    Creates nothing: a failed check leaves no run directory behind."""
    run.check_writable(cfg.output.overwrite, resume, run_inputs(cfg))
    if resume and (run / "config.yaml").is_file():
        import yaml

        conflicts = resume_conflicts(yaml.safe_load((run / "config.yaml").read_text()) or {}, cfg.to_dict())
        if conflicts:
            raise ConfigError(f"--resume: this config differs from {run / 'config.yaml'} in what the "
                              "checkpoints depend on", conflicts + [
                                  f"resume with the run's own config (lmtune train {run / 'config.yaml'} --resume), "
                                  "or start a new run in another output.dir"])
    if resume:
        check_resume_steps(run, cfg.train.max_steps)

    data_paths(cfg)
    ref = start.check_source(cfg.model)   # a run directory to continue from is checked as a run
    shapes = start.architecture_dir(ref)   # a run to start from: its model/ or its base
    max_length_fits(cfg, shapes)
    run_test_files(cfg)
    if cfg.train.objective == "grpo":
        check_user_rewards(cfg)   # the user's reward files import, and have their functions
        grpo_check_vllm(cfg)      # rl.use_vllm: vllm installed and CUDA, before any model loads
    if cfg.method in ("lora", "qlora"):
        check_target_modules(shapes, cfg.lora.target_modules)
    if cfg.method == "qlora":
        check_qlora_supported()
    t = cfg.train
    if t.load_best and t.eval_steps and t.save_steps and t.save_steps % t.eval_steps:
        # the Trainer can only keep the best checkpoint if every save coincides with an evaluation
        raise ConfigError(f"train.save_steps: {t.save_steps} must be a multiple of train.eval_steps "
                          f"({t.eval_steps}) when train.load_best is on",
                          [f"set train.save_steps={t.eval_steps * max(1, t.save_steps // t.eval_steps)}, "
                           "or train.load_best=false"])
    return ref


def _setup(cfg: Config, run: RunDir, resume: bool) -> _Setup:
    import torch

    ref = _preflight_all_ranks(cfg, run, resume)
    device = models.detect_device()
    precision = models.resolve_precision(cfg.train.precision, device)
    tokenizer = start.load_tokenizer(ref, cfg.model)
    data = _prepare_data(cfg, run, tokenizer, resume)  # raises DataError listing every bad record
    if cfg.train.objective == "sft":
        _say_data(data.stats)
    template = data.template
    _seed(cfg.train.seed)  # LoRA/new-token init: same start on every rank and in every rerun
    model = start.load_model(ref, cfg, device, tokenizer, quantize=cfg.method == "qlora")

    add_replay(cfg, run, data, model, tokenizer, device, resume)   # data.replay: the base is loaded, untouched
    _suggest_processes(cfg, device.kind, torch.get_num_threads())
    _own_data_defaults(cfg, run, model, data, device.kind, tokenizer)  # auto -> numbers, held-out test split
    models.use_training_attention(model, cfg, device)
    reference = None
    if cfg.train.objective != "sft":
        reference = objectives.reference_copy(model, cfg)   # full dpo/kto: the frozen start, before training
    model = methods.prepare(model, cfg)

    record_base(model, cfg.model.name_or_path)  # adapter_config.json: 'tiny' or the Hub id, not a path
    if distributed.is_main_process():
        start.record(run.root, cfg.model.name_or_path)   # started_from.json when it continues a run
    trainable, total = methods.count_parameters(model)
    _write_run_inputs(cfg, run, template, data)
    return _Setup(model, tokenizer, template, data, device, precision, trainable, total, reference)


def _say_data(stats: dict) -> None:
    if distributed.is_main_process():
        print(summary_line(stats), file=sys.stderr)


def _suggest_processes(cfg: Config, device_kind: str, threads: int) -> None:
    """One process on one thread of a multi-core CPU (the default) leaves cores idle: say how to
    use them. Processes, not threads: a second passive thread costs more than it gives
    (lmtune/train/cpu_tuning.py; the measurements are in benchmarks/README.md)."""
    cores = distributed.usable_cores()
    if device_kind != "cpu" or threads != 1 or cfg.train.threads or distributed.is_launched() or cores < 2:
        return
    accum = cfg.train.grad_accum
    if cfg.train.rows_per_step:   # grad_accum follows the process count (lmtune/train/processes.py)
        how = "--nproc auto"
    else:
        how = (f"--nproc {cores} train.grad_accum={accum // cores}" if accum % cores == 0
               else f"--nproc {cores} (and train.grad_accum divided by {cores})")
    print(f"note: CPU training runs one thread per process; {how} uses all {cores} cores with the same "
          f"rows per optimizer step", file=sys.stderr)


def _own_data_defaults(cfg: Config, run: RunDir, model, data, device_kind: str, tokenizer=None) -> None:
    """Auto hyperparameters from this model and data (lmtune/train/hparams.py), in place, before
    config.yaml is written. Rank 0 writes the held-out test split (data/holdout.py) that the
    final evaluation scores, prints the data pipeline's warnings and what auto chose."""
    main = distributed.is_main_process()
    if main:
        for warning in data.stats.get("warnings", []):
            print(f"warning: {warning}", file=sys.stderr)
        if getattr(data, "test_examples", None):
            write_heldout(run / HELDOUT_FILE, data.test_examples)
    size = None
    if cfg.train.objective == "grpo":
        if cfg.train.batch_size is None:   # a micro-batch holds one prompt's group of sampled answers
            cfg.train.batch_size = cfg.rl.num_generations
        size = prompt_data_size(data.train, tokenizer, cfg.data.max_length, cfg.rl.num_generations)
    elif cfg.train.objective != "sft":
        size = data_size(data.train, tokenizer, cfg.data.max_length)
    resolve_for_run(cfg, model, data.train, device_kind, distributed.world_size(),
                    say=print if main else (lambda line: None), data_size=size)


def _preflight_all_ranks(cfg: Config, run: RunDir, resume: bool):
    """In a launched worker: join the other ranks first (distributed.start), let every rank check,
    then wait, so that no rank creates the run directory before all have checked it."""
    distributed.start(cfg, detect_device().kind)
    ref = preflight(cfg, run, resume)
    distributed.barrier()
    return ref


def _seed(seed: int) -> None:
    """The Trainer seeds only when it starts, after the adapters were initialised; seed before."""
    from transformers import set_seed

    set_seed(seed)


def _prepare_data(cfg: Config, run: RunDir, tokenizer, resume: bool):
    """Tokenize once. One process: prepare, then create the run directory (bad data leaves none).
    Several: each machine's first rank prepares and caches, the others read the cache."""
    def create_run() -> None:
        if not resume:
            run.create(cfg.output.overwrite)
        process_record.started(run.root)   # rank 0 only: who trains this run (run/process_record.py)

    if cfg.train.objective != "sft":   # preference records or prompts: rendered text, tokenized by TRL
        if cfg.train.objective == "grpo":
            data = prepare_prompts(cfg.data, lambda fmt: run_template(cfg, tokenizer, fmt),
                                   rag_augment(cfg, tokenizer))
        else:
            data = prepare_preference(cfg.data, cfg.train.objective, run_template(cfg, tokenizer))
        if distributed.is_main_process():
            create_run()
        distributed.barrier()
        return data
    return distributed.prepare_data_once(run.root, lambda: lmtune.data.prepare_datasets(
        cfg.data, tokenizer, augment=rag_augment(cfg, tokenizer)), create_run, tokenizer)


def rag_augment(cfg: Config, tokenizer):
    """With rag.docs set: every training prompt carries its retrieved passages (lmtune/rag/training.py).
    rag.eval_docs is checked here too: a bad record should stop the run before training, not after."""
    if cfg.rag.eval_docs and cfg.eval.after_train:
        _eval_rag(cfg)
    if not cfg.rag.docs:
        return None
    from lmtune.rag.training import training_passages

    augment = training_passages(cfg.rag, tokenizer)
    passages = "its best passage" if cfg.rag.top_k == 1 else f"{cfg.rag.top_k} passages"
    print(f"rag: each training prompt carries {passages} from {cfg.rag.docs} "
          f"(the gold passage in {cfg.rag.train_gold:.0%} of them)", file=sys.stderr)
    return augment


def run_template(cfg: Config, tokenizer, data_format: str = "chat"):
    """The template of a preference or grpo run: the run's it starts from (template.json), else the
    one SFT would use for data of `data_format` (data.template)."""
    run = start.source_run(cfg.model.name_or_path)
    saved = start.template_of(run) if run else None
    if saved and cfg.data.template == "auto":
        return template_from_dict(saved, tokenizer)
    return get_template(cfg.data.template, data_format, tokenizer, cfg.data.system_prompt)


def _write_run_inputs(cfg: Config, run: RunDir, template, data) -> None:
    if not distributed.is_main_process():  # run files are rank 0's
        return
    write_text(run / "config.yaml", cfg.to_yaml())
    write_json(run / "data_stats.json", data.stats)
    write_json(run / "template.json", template.to_dict())
    write_json(run / "env.json", collect_env(cfg, data))


# ---------------------------------------------------------------- trainer

def _build_trainer(cfg: Config, run: RunDir, s: _Setup, extra_callbacks: list = ()):
    # Here, not at the top: callbacks and trainer load transformers and trl, and `lmtune train` runs
    # preflight (imported from this module) before torch loads.
    from transformers import EarlyStoppingCallback

    from lmtune.train.callbacks import MarkCheckpointComplete, MetricsJsonl, NonFiniteGuard
    from lmtune.train.trainer import LmtuneSFTTrainer

    has_eval = s.data.validation is not None and len(s.data.validation) > 0
    sft = cfg.train.objective == "sft"
    callbacks = [MetricsJsonl(run / "metrics.jsonl", perplexity=sft), NonFiniteGuard(),
                 MarkCheckpointComplete(checkpoint_card(cfg))]
    if cfg.train.early_stopping_patience and has_eval:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=cfg.train.early_stopping_patience))
    callbacks += list(extra_callbacks)
    if cfg.train.objective == "grpo":
        from lmtune.train import grpo
        from lmtune.train.callbacks import GroupSpreadWatch

        callbacks.append(GroupSpreadWatch())
        args = grpo.grpo_config(cfg, common_arguments(cfg, run, s.precision, s.device.kind, False))
        trainer = grpo.build(cfg, args, s.model, s.reference, s.tokenizer, s.data.train, s.template, callbacks)
        return _console(cfg, s, trainer)
    if not sft:
        args = objectives.objective_config(cfg, common_arguments(cfg, run, s.precision, s.device.kind, has_eval))
        trainer = objectives.build(cfg, args, s.model, s.reference, s.tokenizer, s.data.train,
                                   s.data.validation if has_eval else None, callbacks)
        return _console(cfg, s, trainer)
    args = training_arguments(cfg, run, s.precision, s.device.kind, has_eval)
    trainer = LmtuneSFTTrainer(
        lm_head=cfg.train.lm_head_for(s.device.kind),
        model=s.model,
        args=args,
        train_dataset=s.data.train,
        eval_dataset=s.data.validation if has_eval else None,
        processing_class=s.tokenizer,
        callbacks=callbacks,
    )
    return _console(cfg, s, trainer)


def _console(cfg: Config, s: _Setup, trainer):
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from lmtune.train.callbacks import ConsoleProgress  # lazy: pulls in transformers, see _build_trainer

    for default in (ProgressCallback, PrinterCallback):  # ConsoleProgress replaces the raw-dict printer
        trainer.remove_callback(default)
    trainer.add_callback(ConsoleProgress())
    if cfg.method == "qlora" and s.precision == "fp32":
        _adapters_to_fp32(trainer.model)
    return trainer


def _adapters_to_fp32(model) -> None:
    """TRL casts QLoRA adapters to bf16 (the QLoRA paper's choice on GPUs). With fp32 compute (CPU)
    that only costs speed (no bf16 units here) and precision, so the adapters go back to fp32.
    Runs before the optimizer exists, so its state is fp32 too."""
    import torch

    for name, p in model.named_parameters():
        if p.requires_grad and p.dtype == torch.bfloat16:
            p.data = p.data.to(torch.float32)


def _fit(trainer, run: RunDir, resume: bool, max_steps: int) -> None:
    checkpoint = resume_checkpoint(run, max_steps) if resume else None
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    from lmtune.train.callbacks import MarkCheckpointComplete, NonFiniteGuard  # transformers: see _build_trainer

    # NonFiniteGuard sees logged loss/grad norm; MarkCheckpointComplete sees the weights it would mark.
    guards = [cb for cb in trainer.callback_handler.callbacks
              if isinstance(cb, (NonFiniteGuard, MarkCheckpointComplete))]
    bad = next((cb.bad for cb in guards if cb.bad), None)
    if bad:
        last = run.last_checkpoint()
        raise UserError(
            f"training stopped at step {bad['step']}: {bad['key']} became {bad['value']}",
            ["likely causes: learning rate too high (lower train.learning_rate), fp16 overflow "
             "(use precision bf16 or fp32), or bad data",
             f"last good checkpoint: {last} (its weights are finite; the final adapter/model was not written)"
             if last else "no checkpoint was saved before the failure",
             "start again with a lower train.learning_rate (a new output.dir, or output.overwrite=true): "
             "--resume would restore the same learning-rate schedule"])


# ---------------------------------------------------------------- save

def _save(cfg: Config, run: RunDir, s: _Setup, trainer, seconds: float):
    """Final weights in plain HF layout (adapter/ or model/), then train_summary.json; returns its
    metrics and the validation loss (eval.json reuses it). Each directory is written to a staging
    name first and renamed, so it is either whole or absent."""
    name = "model" if cfg.method == "full" else "adapter"
    main = trainer.is_world_process_zero()
    staging = run.staging(name) if main else run / f".{name}.staging"
    _save_weights(trainer, staging)
    if main:
        s.tokenizer.save_pretrained(str(staging))
        write_json(staging / "lmtune_template.json", s.template.to_dict())
        replace_dir(staging, run / name)
    metrics = {"method": cfg.method, "objective": cfg.train.objective, "trainable_params": s.trainable,
               "total_params": s.total,
               "train_seconds": round(seconds, 2), "global_step": trainer.state.global_step,
               "epochs": round(trainer.state.epoch or 0.0, 4),
               "stop_at": stop_at_of(cfg), "peak_memory_mb": _peak_memory_mb()}
    warnings = [cb.warning for cb in trainer.callback_handler.callbacks if getattr(cb, "warning", None)]
    if warnings:   # said during training (GRPO's GroupSpreadWatch); kept with the run
        metrics["warnings"] = warnings
    train_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    if train_losses:
        metrics["final_train_loss"] = train_losses[-1]
    val = None
    # the last pass over the validation split is part of the after-train evaluation
    measure = trainer.eval_dataset is not None and (cfg.eval.after_train or cfg.eval.final_val_loss)
    if measure and distributed.shards_weights(cfg):
        # no rank holds the whole model: the Trainer's loop (every rank); no eval.json follows
        loss = trainer.evaluate()["eval_loss"]
        metrics["eval_loss"], metrics["eval_perplexity"] = loss, math.exp(min(loss, 50.0))
    elif measure and cfg.train.objective != "sft":
        # the objective's own validation numbers (eval_loss, eval_rewards/margins, ...)
        metrics.update({k: v for k, v in trainer.evaluate().items() if isinstance(v, (int, float))})
    elif measure and main:
        val = validation_loss(trainer.model, s.data.validation, s.tokenizer, cfg)
        metrics["eval_loss"], metrics["eval_perplexity"] = val.loss, val.perplexity
    if main:
        write_json(run / "train_summary.json", metrics)
        _write_card(cfg, run)
    return metrics, val


def _write_card(cfg: Config, run: RunDir) -> None:
    write_run_card(cfg, run.root)



def _save_weights(trainer, path: Path) -> None:
    """One process or DDP: rank 0 saves the model it holds. FSDP/DeepSpeed: every rank joins
    `trainer.save_model`, which gathers the shards into one HF-layout state dict that rank 0 writes."""
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        trainer.save_model(str(path))
    elif trainer.is_world_process_zero():
        trainer.model.save_pretrained(str(path), safe_serialization=True)


def _finish_on_main(cfg: Config, run: RunDir, s: _Setup, trainer, metrics: dict, quiet: bool,
                    val=None) -> None:
    """eval.json and report.html are rank 0's. With sharded weights (FSDP, ZeRO-3) no rank holds
    the whole model, so the after-train evaluation is left to `lmtune eval RUN` (said, not hidden)."""
    if cfg.eval.after_train and distributed.shards_weights(cfg):
        if distributed.is_main_process():
            print(f"note: {cfg.distributed.backend} shards the weights: run `lmtune eval {run.root}` for "
                  f"eval.json")
        cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, after_train=False))
    if distributed.is_main_process():
        _finish(cfg, run, s, trainer, metrics, quiet, val)
    distributed.finish(run.root)


def _finish(cfg: Config, run: RunDir, s: _Setup, trainer, metrics: dict, quiet: bool, val=None) -> None:
    """Evaluate base vs tuned (eval.json), write report.html, print the summary."""
    summary = ""
    if cfg.eval.after_train:
        # a preference run's validation split is pairs, not SFT examples: no validation loss there
        sft = cfg.train.objective == "sft"
        result = final_evaluation(cfg, run.root, trainer.model, s.tokenizer, s.template,
                                  validation=s.data.validation if sft else None, progress=not quiet,
                                  validation_loss=val, rag=_eval_rag(cfg))
        summary = summarize(result)
        _write_card(cfg, run)  # now with the task metrics
    if cfg.output.report:
        write_report(run.root)
    if quiet:
        return
    print(f"\ntrainable params: {s.trainable:,} ({100 * s.trainable / s.total:.2f}% of the base model's "
          f"{s.total:,}, tied embeddings counted once), "
          f"{cfg.method}, {metrics['global_step']} steps in {metrics['train_seconds']:.0f} s, "
          f"peak memory {metrics['peak_memory_mb']:.0f} MB")
    if summary:
        print(summary)
    name = "model" if cfg.method == "full" else "adapter"
    extras = ["eval.json"] if cfg.eval.after_train else []
    extras += ["metrics.jsonl", "tensorboard/"] + (["report.html"] if cfg.output.report else [])
    print(f"artifacts: {run.root}/{name}/ (weights), {', '.join(extras)}")


def _eval_rag(cfg: Config):
    """The retrieval the final evaluation scores with beside the plain prompts: rag.eval_docs, else
    rag.docs, with the run's top_k and chunking (None: the run retrieves from nothing)."""
    from lmtune.errors import UserError
    from lmtune.rag.inference import rag_settings

    try:
        return rag_settings(cfg, None, evaluation=True)
    except UserError as exc:   # its hint names eval's --docs; here the key is the config's
        key = "rag.eval_docs" if cfg.rag.eval_docs else "rag.docs"
        raise UserError(f"{key}: {exc.args[0].split(' by default: ')[-1]}",
                        [p for p in exc.problems if "--docs" not in p]
                        + [f"fix {key}, or set eval.after_train: false"]) from None


def _peak_memory_mb() -> float:
    """Peak RSS of this process on CPU, or peak allocated CUDA memory."""
    import resource

    import torch

    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB
