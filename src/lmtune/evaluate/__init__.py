"""Evaluation: validation loss/perplexity, generation-based task metrics for the tuned model and its
base on the same prompts, and the forgetting check. Results go to RUN/eval.json.

    final_evaluation(cfg, run_dir, model, tokenizer, template)   what `lmtune train` calls at the end
    evaluate_run(path, test=..., base=...)                        what `lmtune eval RUN` calls

Modules: perplexity.py (loss on tokens or text), metrics.py (task scorers), forgetting.py (probe +
verdict), run.py (the sequence and eval.json).
"""

from __future__ import annotations

from pathlib import Path

import lmtune.data
from lmtune.config import from_dict
from lmtune.errors import DataError, UserError
from lmtune.evaluate.forgetting import FORGOTTEN, OK, WARNING, ForgettingResult, verdict
from lmtune.evaluate.run import EVAL_FILE, PREDICTIONS_FILE, EvalSettings, evaluate_model
from lmtune.generate import Generator
from lmtune.inference_loading import open_path


def final_evaluation(cfg, run_dir, model, tokenizer, template, validation=None,
                     progress: bool = True, validation_loss=None, rag=None) -> dict:
    """Evaluate the model just trained (still in memory) and its base; writes RUN/eval.json.
    `validation`: the tokenized validation dataset train already has (skips re-preparing it);
    `validation_loss`: the tuned model's loss on it, measured already for train_summary.json;
    `rag` (a config.RagConfig): also score both with retrieved passages, side by side."""
    source = validation_source(cfg) if validation is not None else "none (the run has no validation data)"
    settings = EvalSettings(base=True, progress=progress, loss_source=source, tuned_validation=validation_loss,
                            rag=rag)
    return evaluate_model(cfg, run_dir, model, tokenizer, template, validation, settings)


def evaluate_run(path: str | Path, test: list[str] | None = None, base: bool = False,
                 num_samples: int | None = None, max_new_tokens: int | None = None,
                 batch_size: int | None = None, forgetting: bool | None = None,
                 progress: bool = True, few_shot: int | None = None, task: str | None = None,
                 out: str | Path | None = None, rag=None) -> dict:
    """Load a run directory's final model and evaluate it; writes RUN/eval.json and returns it.
    Loss is measured on the run's validation split (re-prepared exactly as train did), or on the
    --test files when given. A plain model ('tiny', a model directory or Hub id) is evaluated on
    its own on `task` or `test` (its "before" score); eval.json goes to `out` when given.
    `rag` (a config.RagConfig, lmtune.rag.inference.rag_settings): task metrics are also measured
    with retrieved passages in each prompt, side by side with those without."""
    loaded = open_path(str(path))
    if loaded.kind == "run":
        cfg, target = loaded.config, path
    else:
        cfg, target = _plain_model_config(str(path), loaded.kind, task, test), out
        base, forgetting = False, False   # the model is its own base: nothing to compare
    if task and loaded.kind == "run" and task != cfg.data.task:
        raise UserError(f"--task {task}: {path} was trained on data.task={cfg.data.task}",
                        ["score a run on other prompts with --test FILE"])
    gen = Generator.load(str(path))
    settings = EvalSettings(test=list(test) if test else None, base=base, num_samples=num_samples,
                            max_new_tokens=max_new_tokens, batch_size=batch_size,
                            forgetting=forgetting, progress=progress, few_shot=few_shot,
                            subject="run" if loaded.kind == "run" else "model", rag=rag)
    validation, settings.loss_source = loss_data(cfg, gen.tokenizer, gen.template, settings)
    return evaluate_model(cfg, target, gen.model, gen.tokenizer, gen.template, validation, settings)


def _plain_model_config(path: str, kind: str, task: str | None, test: list[str] | None):
    """The config a bare model is evaluated under: its own name and the task (or test files)."""
    if kind == "adapter":
        raise UserError(f"{path}: a bare adapter; `lmtune eval` takes a run directory or a model",
                        ["evaluate the run that wrote it, or merge it first (`lmtune merge`)"])
    if not task and not test:
        raise UserError(f"{path}: not a run directory, so there is nothing to compare it with",
                        ["to score a model on its own, name a bundled task or test files: "
                         f"`lmtune eval {path} --task sql` or `lmtune eval {path} --test FILE`"])
    # A config needs training data to validate: the test files stand in, then are taken out again
    # so that nothing (few-shot shots) ever reads them as training examples.
    raw = {"model": {"name_or_path": path}, "data": {"task": task} if task else {"train": list(test)}}
    cfg = from_dict(raw, "--task")
    if not task:
        cfg.data.train = []
    return cfg


def loss_data(cfg, tokenizer, template, settings: EvalSettings):
    """(tokenized examples, description) to measure loss on: the --test files when given, else the
    run's validation split rebuilt by the data pipeline. (None, reason) when neither is available."""
    if settings.test:
        rows = lmtune.data.tokenize_files(list(settings.test), cfg.data.format, template, tokenizer,
                                          cfg.data.max_length, cfg.data.train_on_prompt, "test data", "test")
        return rows, f"test: {', '.join(settings.test)}"
    try:
        augment = _training_passages(cfg, tokenizer)
        data = lmtune.data.prepare_datasets(cfg.data, tokenizer, template, augment=augment)
    except (DataError, UserError) as exc:   # training files (or rag.docs) moved since the run: say so, go on
        return None, f"unavailable ({exc.args[0]})"
    if data.validation is None:
        return None, "none (data.val_split is 0 and no data.validation)"
    return data.validation, validation_source(cfg)


def validation_source(cfg) -> str:
    """What eval.json says the loss was measured on, the same after train and in `lmtune eval`."""
    if cfg.rag.docs:
        return f"validation split, with the passages training gave it from rag.docs {cfg.rag.docs}"
    return "validation split"


def _training_passages(cfg, tokenizer):
    """A run trained with rag.docs measured its validation loss on prompts carrying passages
    (lmtune/rag/training.py): the same passages here, so the two losses are one number. The run's
    own rag.docs, whatever --docs says (that is for the task metrics)."""
    if not cfg.rag.docs:
        return None
    from lmtune.rag.training import training_passages

    try:
        return training_passages(cfg.rag, tokenizer)
    except UserError as exc:
        raise UserError(f"the run's rag.docs gave its validation prompts their passages: {exc.args[0]}") from None


__all__ = ["EVAL_FILE", "FORGOTTEN", "OK", "PREDICTIONS_FILE", "WARNING", "EvalSettings",
           "ForgettingResult", "evaluate_model", "evaluate_run", "final_evaluation", "loss_data",
           "verdict"]
