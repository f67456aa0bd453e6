"""One evaluation, top to bottom: validation loss -> task metrics (tuned, then base on the same
prompts) -> forgetting probe -> eval.json + eval_predictions.jsonl in the run directory.

The "base" is the model the run started from. For LoRA/QLoRA it is the same loaded model with the
adapter switched off (peft's `disable_adapter()`), so base and tuned share weights, tokenizer and,
for QLoRA, the 4-bit quantization: the comparison isolates what the adapter learned. A full
fine-tune has no adapter to switch off, so the original base (config.yaml model.name_or_path) is
loaded separately, after the tuned model is done with.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from lmtune import models
from lmtune.config import Config
from lmtune.data import load_split, resolve_files
from lmtune.data.holdout import HELDOUT_FILE
from lmtune.evaluate import forgetting
from lmtune.evaluate.few_shot import few_shot_prompts, load_shots
from lmtune.evaluate.metrics import Scores, get_scorer, score
from lmtune.evaluate.perplexity import LossResult, dataset_loss, text_loss
from lmtune.generate import GenerationSettings, Generator
from lmtune.rag.inference import open_retriever, searcher
from lmtune.rag.prompt import augment_item
from lmtune.run import start
from lmtune.run.layout import write_json, write_output_marker, write_text

EVAL_FILE = "eval.json"
PREDICTIONS_FILE = "eval_predictions.jsonl"


@dataclass
class EvalSettings:
    test: list[str] | None = None      # test files; None: data.test, else the bundled task's test split
    base: bool = True                  # also generate with the base model on the same prompts
    num_samples: int | None = None     # None: eval.num_samples from the config
    few_shot: int | None = None        # None: eval.few_shot (solved training examples in each prompt)
    subject: str = "run"               # "model": a plain model scored on its own (its "before")
    max_new_tokens: int | None = None  # None: eval.max_new_tokens
    batch_size: int | None = None      # None: train.eval_batch_size
    forgetting: bool | None = None     # None: eval.forgetting_check
    progress: bool = True
    samples_kept: int = 5              # examples shown side by side in eval.json / the report
    loss_source: str = "validation split"   # what the loss was measured on (or why it was not)
    tuned_validation: LossResult | None = None   # measured already (by train, `validation_loss`): reused
    rag: object | None = None          # config.RagConfig: also score every model with retrieved passages


@dataclass
class TestSet:
    source: str                        # file path(s) or a description
    scorer: object                     # a lmtune.tasks Task
    examples: list = field(default_factory=list)   # lmtune.data.Example
    shots: list = field(default_factory=list)      # few-shot examples put before each prompt
    sources: list | None = None        # with retrieval: each example's passages (its prompt carries them)


def _log(settings: EvalSettings, msg: str) -> None:
    if settings.progress:
        print(f"[eval] {msg}", flush=True)


# ---------------------------------------------------------------- model state

@contextlib.contextmanager
def inference_mode(model):
    """eval() (no dropout) and the KV cache on for generation; both restored afterwards (SFTTrainer
    turns use_cache off for training, which would make generation quadratic)."""
    was_training = model.training
    gen_cfg = getattr(model, "generation_config", None)
    old_cache = getattr(gen_cfg, "use_cache", None)
    model.eval()
    if gen_cfg is not None:
        gen_cfg.use_cache = True
    try:
        yield model
    finally:
        model.train(was_training)
        if gen_cfg is not None:
            gen_cfg.use_cache = old_cache


@contextlib.contextmanager
def merged_adapter(model):
    """A LoRA adapter merged into its weights while the model generates, unmerged afterwards.
    Unmerged, every adapted layer runs two extra small matmuls per token through peft's Python
    wrapper: tuned generation on the embedded base took 81 s against the base's 45 s for the same
    200 prompts. Never for a 4-bit base (merging into NF4 weights would round the adapter away) or
    a model without an adapter. Unmerging restores the weights up to float rounding (~1e-7)."""
    # transformers marks a bitsandbytes 4-bit model (peft passes the attribute through)
    mergeable = hasattr(model, "merge_adapter") and not getattr(model, "is_loaded_in_4bit", False)
    if mergeable:
        model.merge_adapter()
    try:
        yield model
    finally:
        if mergeable:
            model.unmerge_adapter()


@contextlib.contextmanager
def base_model(model, cfg: Config, tokenizer):
    """The model the run started from (see the module doc)."""
    if hasattr(model, "disable_adapter"):
        with model.disable_adapter(), inference_mode(model):
            yield model
        return
    device = models.detect_device()
    # a run that continued another run started from that run's weights (lmtune/run/start.py)
    base = start.load_model(models.resolve_model_path(cfg.model.name_or_path), cfg, device, tokenizer)
    if device.kind == "cuda":
        base = base.to("cuda")
    try:
        with inference_mode(base):
            yield base
    finally:
        del base


# ---------------------------------------------------------------- inputs

def resolve_test_set(cfg: Config, settings: EvalSettings, run_dir: str | Path | None = None) -> TestSet | None:
    """--test files, else data.test, else the bundled task's test split, else the test split train
    held out of the training data (RUN/heldout_test.jsonl); None when there is none.
    The run's task (data.task) picks the scorer; a user's own data gets exact match + ROUGE-L."""
    paths = list(settings.test or []) or resolve_files(cfg.data)["test"]
    source = None
    heldout = Path(run_dir) / HELDOUT_FILE if run_dir is not None and settings.subject == "run" else None
    if not paths and heldout is not None and heldout.is_file():
        paths = [str(heldout)]
        source = f"{heldout} (held out of data.train, never trained on)"
    if not paths:
        return None
    loaded = load_split(paths, cfg.data.format, "test data")
    if loaded.format == "text":   # no prompt/answer split: nothing to generate, loss only
        return None
    examples = loaded.examples
    limit = settings.num_samples or cfg.eval.num_samples
    if limit:
        examples = examples[:limit]
    k = cfg.eval.few_shot if settings.few_shot is None else settings.few_shot
    exclude = {ex.content_key() for ex in loaded.examples} if source else frozenset()
    return TestSet(source or ", ".join(str(p) for p in paths), get_scorer(cfg.data.task), examples,
                   load_shots(cfg, k, exclude))


def with_retrieval(test: TestSet | None, settings: EvalSettings, tokenizer) -> TestSet | None:
    """The test set again, each prompt with its retrieved passages (settings.rag), for the side-by-side
    scores; None without retrieval. The same scorer, references and shots."""
    if test is None or settings.rag is None or not test.examples:
        return None
    search = searcher(open_retriever(settings.rag, tokenizer), settings.rag.top_k)
    found = [augment_item(ex, search) for ex in test.examples]
    return TestSet(test.source, test.scorer, [ex for ex, _ in found], test.shots, [p for _, p in found])


def prompt_text(example) -> str:
    """What the user asked (last user turn), for side-by-side tables."""
    turns = [m["content"] for m in example.prompt_messages() if m["role"] == "user"]
    return turns[-1] if turns else (example.text or "")


# ---------------------------------------------------------------- steps

def _generate(model, tokenizer, template, test: TestSet, settings: EvalSettings, cfg: Config,
              label: str) -> list[str]:
    gen = Generator(model, tokenizer, template)
    gs = GenerationSettings(max_new_tokens=settings.max_new_tokens or cfg.eval.max_new_tokens,
                            greedy=True, batch_size=settings.batch_size or cfg.train.eval_batch_size)
    shots = f" with {len(test.shots)} shots" if test.shots else ""
    _log(settings, f"generating {len(test.examples)} answers ({label}{shots})")
    return gen.generate(few_shot_prompts(template, test.shots, test.examples), gs, progress=settings.progress)


def _probe_loss(model, tokenizer, cfg: Config, settings: EvalSettings, texts: list[str], label: str):
    return text_loss(model, tokenizer, texts, forgetting.probe_max_length(model),
                     settings.batch_size or cfg.train.eval_batch_size,
                     desc=f"probe perplexity ({label})" if settings.progress else None)


def _val_loss(model, validation, tokenizer, cfg: Config, settings: EvalSettings, label: str):
    return dataset_loss(model, validation, tokenizer.pad_token_id, cfg.data.max_length,
                        settings.batch_size or cfg.train.eval_batch_size,
                        desc=f"validation loss ({label})" if settings.progress else None)


def validation_loss(model, validation, tokenizer, cfg: Config, progress: bool = False) -> LossResult:
    """The validation loss eval.json reports, for train_summary.json too (one path, one number)."""
    with inference_mode(model):
        return _val_loss(model, validation, tokenizer, cfg, EvalSettings(progress=progress), "tuned")


@dataclass
class _Side:
    """Everything measured on one model (tuned or base)."""
    validation: LossResult | None = None
    generations: list[str] | None = None
    answers: list[str] | None = None
    scores: Scores | None = None
    probe: LossResult | None = None
    rag: "_Side | None" = None          # the same model's answers with retrieved passages


def _measure(model, tokenizer, template, cfg, settings, validation, test, probe_texts, label,
             merge: bool = False, rag_test: TestSet | None = None) -> _Side:
    side = _Side()
    with inference_mode(model):
        if validation is not None:
            side.validation = _val_loss(model, validation, tokenizer, cfg, settings, label)
        if test is not None and test.examples:
            with merged_adapter(model) if merge else contextlib.nullcontext():
                side.generations = _generate(model, tokenizer, template, test, settings, cfg, label)
                if rag_test is not None:
                    side.rag = _Side(generations=_generate(model, tokenizer, template, rag_test, settings, cfg,
                                                           f"{label} + docs"))
            refs = [ex.response for ex in test.examples]
            side.answers, side.scores = score(test.scorer, side.generations, refs)
            if side.rag is not None:
                side.rag.answers, side.rag.scores = score(test.scorer, side.rag.generations, refs)
        if probe_texts:
            side.probe = _probe_loss(model, tokenizer, cfg, settings, probe_texts, label)
    return side


def evaluate_model(cfg: Config, run_dir: str | Path | None, model, tokenizer, template,
                   validation=None, settings: EvalSettings | None = None) -> dict:
    """Evaluate a loaded tuned model (and its base) and write eval.json into `run_dir`."""
    settings = settings or EvalSettings()
    started = time.time()
    test = resolve_test_set(cfg, settings, run_dir)
    rag_test = with_retrieval(test, settings, tokenizer)
    check_forgetting = cfg.eval.forgetting_check if settings.forgetting is None else settings.forgetting
    probe_texts = forgetting.load_probe() if check_forgetting else []

    label = "tuned" if settings.subject == "run" else "model"
    measured = settings.tuned_validation
    tuned = _measure(model, tokenizer, template, cfg, settings, validation if measured is None else None,
                     test, probe_texts, label, merge=True, rag_test=rag_test)
    tuned.validation = measured or tuned.validation
    base = None
    if settings.base or probe_texts:
        # Base generation only when asked; the probe's base perplexity is cheap and always needed.
        base_test = test if settings.base else None
        base_val = validation if settings.base else None
        with base_model(model, cfg, tokenizer) as bm:
            base = _measure(bm, tokenizer, template, cfg, settings, base_val, base_test, probe_texts, "base",
                            rag_test=rag_test if settings.base else None)

    result = _assemble(cfg, run_dir, test, tuned, base, probe_texts, settings, time.time() - started)
    if rag_test is not None:
        result["rag"] = _rag_summary(settings.rag, rag_test)
    if run_dir is not None:   # None: a bare model evaluated without --out (printed only)
        _write(Path(run_dir), result, test, tuned, base, rag_test)
    return result


# ---------------------------------------------------------------- results

def _assemble(cfg, run_dir, test, tuned: _Side, base: _Side | None, probe_texts, settings, seconds) -> dict:
    out: dict = {
        "run": None if run_dir is None else str(run_dir), "base_model": cfg.model.name_or_path,
        "subject": settings.subject, "method": cfg.method if settings.subject == "run" else None,
        "evaluated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1),
        "settings": {"max_new_tokens": settings.max_new_tokens or cfg.eval.max_new_tokens,
                     "num_samples": settings.num_samples or cfg.eval.num_samples, "greedy": True,
                     "few_shot": len(test.shots) if test is not None else 0},
        "validation": None, "task": None, "forgetting": None, "samples": [],
    }
    if tuned.validation is None:
        out["validation_note"] = f"no loss measured: {settings.loss_source}"
    else:
        out["validation"] = {"source": settings.loss_source, "tuned": tuned.validation.to_dict(),
                             "base": base.validation.to_dict() if base and base.validation else None}
    if test is None:
        out["task_note"] = ("no test prompts: pass --test FILE (alpaca, chat or prompt/completion records), "
                            "or set data.test / data.task in the config")
    elif tuned.scores is not None:
        out["task"] = {"name": test.scorer.name, "source": test.source, "examples": len(test.examples),
                       "primary": tuned.scores.primary, "metrics": list(test.scorer.metrics),
                       "tuned": tuned.scores.values,
                       "base": base.scores.values if base and base.scores else None}
        if tuned.rag is not None:   # the same prompts with retrieved passages, side by side
            out["task"]["tuned_rag"] = tuned.rag.scores.values
            out["task"]["base_rag"] = base.rag.scores.values if base and base.rag else None
        out["samples"] = [_row(test, tuned, base, i) for i in range(min(settings.samples_kept, len(test.examples)))]
    if probe_texts and base is not None and base.probe and tuned.probe:
        out["forgetting"] = forgetting.compare_perplexity(
            base.probe.perplexity, tuned.probe.perplexity, cfg.eval.forgetting_warn,
            cfg.eval.forgetting_fail, tuned.probe.examples, tuned.probe.tokens, "general/probe.jsonl").to_dict()
    return out


def _rag_summary(rag, rag_test: TestSet) -> dict:
    """What eval.json says about the retrieval it scored with."""
    found = [len(p) for p in rag_test.sources]
    return {"docs": rag.docs, "top_k": rag.top_k, "chunk_tokens": rag.chunk_tokens,
            "chunk_overlap": rag.chunk_overlap, "retriever": rag.retriever,
            "passages_per_prompt": round(sum(found) / max(len(found), 1), 2)}


def _row(test: TestSet, tuned: _Side, base: _Side | None, i: int) -> dict:
    ex = test.examples[i]
    row = {"index": i, "prompt": prompt_text(ex), "reference": ex.response,
           "tuned": tuned.answers[i], "tuned_scores": tuned.scores.per_example[i]}
    if base is not None and base.answers is not None:
        row.update(base=base.answers[i], base_scores=base.scores.per_example[i])
    for name, side in (("tuned", tuned), ("base", base)):
        if side is not None and side.rag is not None:
            row.update({f"{name}_rag": side.rag.answers[i], f"{name}_rag_scores": side.rag.scores.per_example[i]})
    return row


def _write(run_dir: Path, result: dict, test, tuned: _Side, base: _Side | None, rag_test=None) -> None:
    """predictions.jsonl, then eval.json last: eval.json is what says "evaluated", so the old one goes
    first and a kill between the two leaves no eval.json beside new predictions (each file is
    atomic). A directory eval creates (--out) gets lmtune's marker, so a later eval may rewrite it."""
    import json

    if not run_dir.exists() or not any(run_dir.iterdir()):
        run_dir.mkdir(parents=True, exist_ok=True)
        write_output_marker(run_dir, "eval")
    (run_dir / EVAL_FILE).unlink(missing_ok=True)
    if test is not None and tuned.answers is not None:
        lines = []
        for i in range(len(test.examples)):
            row = _row(test, tuned, base, i)
            row["tuned_raw"] = tuned.generations[i]
            if base is not None and base.generations is not None:
                row["base_raw"] = base.generations[i]
            for name, side in (("tuned", tuned), ("base", base)):
                if side is not None and side.rag is not None:
                    row[f"{name}_rag_raw"] = side.rag.generations[i]
            if rag_test is not None:
                row["sources"] = [p.to_dict() for p in rag_test.sources[i]]
            lines.append(json.dumps(row, ensure_ascii=False))
        write_text(run_dir / PREDICTIONS_FILE, "\n".join(lines) + "\n")
    else:   # predictions of an earlier eval would sit beside a result they do not belong to
        (run_dir / PREDICTIONS_FILE).unlink(missing_ok=True)
    write_json(run_dir / EVAL_FILE, result)
