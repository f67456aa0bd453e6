"""Should you fine-tune, and how? A decision framework (docs/estimate.md, "`lmtune advise`"), applied
to your answers, your data and your hardware, ending in a training config that `lmtune train` accepts.

    Q1 can 2-10 examples in the prompt show the model the task?   yes -> in-context learning (ICL)
    Q2 is it mainly about external knowledge or documents?        yes -> RAG
    Q3 do you have 1,000+ good examples?                          no  -> not yet (ICL/RAG meanwhile)
    Q4 is it style, behaviour, format or specialised reasoning?   no  -> RAG + ICL
    Q5 have you exhausted prompt engineering?                     no  -> not yet (prompt harder)
    Q6 which method fits your hardware? (priority: quality -> full first, balance -> LoRA first,
       memory -> QLoRA first; each candidate is checked with `lmtune.estimate` on this machine)

The hybrid (fine-tune for the style, retrieve for the facts) comes before Q2: when the answers have
a style to learn AND carry facts that belong in documents, say so (`style_and_facts`), or let the
data show it: answers that name many distinct things together with numbers the prompt does not
hold (prices, dates, counts: facts the model would have to remember, and that go stale).

Its "when not to fine-tune" conditions are asked too; each one warns, and the ones that make
fine-tuning the wrong tool (fast-changing knowledge, factual QA, no success metric) change the verdict.
This module is pure logic over its inputs; lmtune/commands/advise.py does the asking and writing.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lmtune.config import DataConfig, TrainConfig, from_dict
from lmtune.data import get_template
from lmtune.data.arrow_pipeline import conflicting_prompts, dedupe_positions
from lmtune.data.holdout import heldout_size
from lmtune.data.records import scan
from lmtune.data.token_shards import tokenize_to_arrow
from lmtune.errors import UserError
from lmtune.estimate import EstimateRequest
from lmtune.estimate.core import fit_on, largest_batch
from lmtune.estimate.memory import memory_breakdown, resolve
from lmtune.estimate.shapes import load_shape, model_reference
from lmtune.models import open_tokenizer as load_tokenizer
from lmtune.train.hparams import AUTO, Batch, DataSize, ModelSize
from lmtune.train.hparams import resolve as resolve_hparams  # estimate.memory has a resolve too

VERDICTS = ("icl", "rag", "hybrid", "not-yet", "full", "lora", "qlora")
PRIORITIES = ("quality", "balance", "memory")
CANDIDATES = {"quality": ("full", "lora", "qlora"), "balance": ("lora", "qlora", "full"),
              "memory": ("qlora", "lora")}
MIN_EXAMPLES, GOOD_EXAMPLES = 500, 1000


@dataclass
class Answers:
    few_shot_works: bool = False        # Q1
    needs_knowledge: bool = False       # Q2
    examples: int | None = None         # Q3 (read from the data when given)
    style_or_behaviour: bool = True     # Q4
    prompting_exhausted: bool = True    # Q5
    priority: str = "balance"           # Q6: quality | balance | memory
    changing_domain: bool = False       # when-not: knowledge changes daily/weekly
    many_tasks: bool = False            # when-not: several unrelated tasks
    has_metric: bool = True             # when-not: a clear success metric and evaluation data
    tight_budget: bool = False          # when-not: budget or time constraints
    factual_qa: bool = False            # when-not: mainly factual question answering
    style_and_facts: bool = False       # hybrid: a style to learn and facts that live in documents


# (field, question, kind) in the order the framework asks them; kind: bool | int | choice
QUESTIONS = [
    ("few_shot_works", "Can 2-10 examples in the prompt show the model how to do the task?", "bool"),
    ("needs_knowledge", "Is the task mainly about accessing external knowledge or documents?", "bool"),
    ("factual_qa", "Is it mainly factual question answering?", "bool"),
    ("changing_domain", "Does the knowledge it needs change daily or weekly?", "bool"),
    ("examples", "How many high-quality training examples do you have?", "int"),
    ("style_or_behaviour", "Is it about style, behaviour, output format or specialised reasoning?", "bool"),
    ("style_and_facts", "Do the answers need a fixed style or format AND facts from documents that change "
                        "(e.g. a support bot's tone + the current product docs)?", "bool"),
    ("prompting_exhausted", "Have you truly exhausted prompt engineering (and few-shot, and RAG)?", "bool"),
    ("has_metric", "Do you have a clear success metric and evaluation data?", "bool"),
    ("many_tasks", "Must one model do several unrelated tasks?", "bool"),
    ("tight_budget", "Are you under tight budget or time constraints?", "bool"),
    ("priority", "What matters most: quality (max accuracy), balance, or memory (smallest hardware)?", "choice"),
]


def answers_from_dict(raw: dict, source: str = "answers") -> Answers:
    """Validate an answers mapping (YAML file or flags): unknown keys and wrong types are errors."""
    problems, kwargs = [], {}
    fields = {f.name: f for f in dataclasses.fields(Answers)}
    for key, value in raw.items():
        if key not in fields:
            problems.append(f"{key}: unknown question; allowed: {', '.join(fields)}")
        elif key == "priority":
            if value not in PRIORITIES:
                problems.append(f"priority: got {value!r}, allowed: {', '.join(PRIORITIES)}")
            kwargs[key] = value
        elif key == "examples":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                problems.append(f"examples: got {value!r}, expected a whole number >= 0")
            kwargs[key] = value
        elif not isinstance(value, bool):
            problems.append(f"{key}: got {value!r}, expected true or false")
        else:
            kwargs[key] = value
    if problems:
        raise UserError(f"{source}: {len(problems)} problem(s) in the answers", problems)
    return Answers(**kwargs)


# ---------------------------------------------------------------- the user's data

@dataclass
class DataSummary:
    paths: list[str]
    examples: int              # usable examples after removing exact duplicates
    records: int               # records read
    duplicates: int
    conflicting: int           # prompts that appear with different answers
    problems: int              # records that failed validation
    tokens_p50: int            # approximate tokens per example (characters / 4)
    tokens_p95: int
    tokens_max: int
    tokens_total: int | None = None   # all examples, with the model's template when it could be loaded
    tokens_exact: bool = False         # counted with the model's tokenizer (else characters / 4)
    facts: dict | None = None          # fact_signals(): answers with numbers the prompt lacks, named things


def summarize_data(paths: list[str], model: str | None = None) -> DataSummary:
    """Size, duplicates and lengths of the user's dataset, through lmtune.data's own loader.
    With `model`, lengths are counted with its tokenizer and template, as `train` will."""
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise UserError(f"--data: not found: {', '.join(missing)}", ["pass a JSONL/JSON/CSV/Parquet file or a directory"])
    with tempfile.TemporaryDirectory(prefix="lmtune-advise-") as tmp:
        split = scan(paths, "auto", Path(tmp) / "records.arrow")
        kept = dedupe_positions(split, True, {}, "advise")
        counted = _token_lengths(split, kept, model) if model else None
        # else tokens ~ characters / 4 for English BPE vocabularies: good enough to pick a max_length bucket
        lengths = sorted(counted or [max(1, _chars(ex) // 4) for ex in split.examples(kept)]) or [0]
        facts = fact_signals(split.examples(kept)) if split.format != "text" else None
    pick = lambda q: lengths[min(len(lengths) - 1, int(q * len(lengths)))]  # noqa: E731
    return DataSummary(list(paths), len(kept), split.records, len(split) - len(kept),
                       conflicting_prompts(split, kept), len(split.problems), pick(0.5), pick(0.95), lengths[-1],
                       sum(lengths), counted is not None, facts)


_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
# two or more capitalised words in a row: a product, person, place or company name
_NAME = re.compile(r"\b[A-Z][\w-]*(?:\s+[A-Z][\w-]*)+")
FACT_SHARE, MIN_NAMES, NAME_SHARE = 0.5, 20, 0.05


def fact_signals(examples) -> dict:
    """What in the answers looks like facts from documents: the share of answers with a number
    (price, date, count) that their prompt does not contain, and the distinct names they mention.
    Numbers copied from the prompt (extraction, SQL over the question's values) do not count."""
    with_new, names = 0, set()
    for ex in examples:
        answer = ex.response
        prompt = " ".join(m["content"] for m in ex.prompt_messages()) if ex.messages else ""
        if set(_NUMBER.findall(answer)) - set(_NUMBER.findall(prompt)):
            with_new += 1
        names.update(re.sub(r"^(The|A|An)\s+", "", n) for n in _NAME.findall(answer))
    n = len(examples)
    return {"answers_with_new_numbers": round(with_new / n, 3) if n else 0.0, "distinct_names": len(names),
            "examples": n}


def looks_like_changing_facts(facts: dict | None) -> str | None:
    """Why the data looks like facts that belong in retrieval, or None."""
    if not facts or not facts["examples"]:
        return None
    share, names = facts["answers_with_new_numbers"], facts["distinct_names"]
    if share >= FACT_SHARE and names >= max(MIN_NAMES, NAME_SHARE * facts["examples"]):
        return (f"{share:.0%} of the answers state numbers their prompt does not hold, about {names} distinct "
                f"named things: facts the weights would have to memorise, and that go stale when they change")
    return None


def _token_lengths(split, kept, model: str) -> list[int] | None:
    """Token count of each example as train renders it; None when the tokenizer is not available
    here (a Hub model that is not cached, a preset without a local copy)."""
    try:
        tokenizer = load_tokenizer(model_reference(model))
        template = get_template("auto", split.format or "chat", tokenizer)
        # nothing is cut at this length, so each full length is the example's token count
        tok = tokenize_to_arrow(split, kept, template, tokenizer, 1 << 20, False, None, "examples")
    except Exception:  # noqa: BLE001 - any failure falls back to the character estimate
        return None
    return list(tok.full_lengths) or None


def _chars(ex) -> int:
    if ex.messages is not None:
        return sum(len(m["content"]) for m in ex.messages)
    return len(ex.text or "")


# ---------------------------------------------------------------- the decision

@dataclass
class Advice:
    verdict: str                                  # one of VERDICTS
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    hyperparameters: dict = field(default_factory=dict)
    estimate: dict = field(default_factory=dict)  # peak GiB, device, max batch, time, cost
    config: dict | None = None                    # a validated lmtune config (for fine-tune verdicts)
    auto: list[str] = field(default_factory=list)  # what train.learning_rate/epochs: auto resolve to

    @property
    def fine_tune(self) -> bool:
        return self.verdict in ("full", "lora", "qlora", "hybrid")


@dataclass
class Context:
    """Everything besides the answers: model, data, hardware, sequence length."""
    model: str = "tiny"
    data: DataSummary | None = None
    device: object = None                         # lmtune.estimate.hardware.Device
    num_gpus: int = 1
    seq_len: int | None = None
    output_dir: str = "runs/advised"
    docs: str | None = None                       # the documents a hybrid retrieves from (rag.docs)


def when_not_warnings(a: Answers, n: int | None) -> list[str]:
    """The framework's 'when NOT to fine-tune' list, one warning per condition that holds."""
    w = []
    if n is not None and n < MIN_EXAMPLES:
        w.append(f"only {n} examples (< {MIN_EXAMPLES}): not enough for meaningful fine-tuning; use ICL")
    if a.changing_domain:
        w.append("the knowledge changes daily/weekly: RAG stays current, fine-tuned weights do not")
    if a.many_tasks:
        w.append("several unrelated tasks: fine-tuning specialises; prefer one adapter per task, or a general "
                 "model with prompts")
    if not a.has_metric:
        w.append("no clear success metric: build an evaluation set first, or you cannot tell if tuning helped")
    if a.tight_budget:
        w.append("tight budget/time: RAG and prompting reach users sooner; full fine-tuning is ruled out")
    if a.factual_qa:
        w.append("mainly factual QA: RAG answers from sources; fine-tuning adds little and hallucinates facts")
    return w


def data_warnings(d: DataSummary | None, seq_len: int | None) -> list[str]:
    if d is None:
        return ["no dataset given (--data): counts and lengths come from your answers"]
    w = []
    if d.duplicates:
        w.append(f"{d.duplicates} exact duplicate examples ({100 * d.duplicates / max(1, d.examples + d.duplicates):.1f}%)"
                 " will be dropped (data.dedupe)")
    if d.conflicting:
        w.append(f"{d.conflicting} prompts appear with different answers: check the labels")
    if d.problems:
        w.append(f"{d.problems} records failed validation: run `lmtune data check` for file:line details")
    if seq_len and d.tokens_max > seq_len:
        w.append(f"the longest example (~{d.tokens_max} tokens) exceeds max_length {seq_len}: it will be truncated")
    return w


def decide_hybrid(a: Answers, n: int | None, facts: dict | None) -> tuple[str | None, list[str]]:
    """Fine-tune for the style, retrieve for the facts: when the user says the answers need both, or
    the data's answers carry facts (looks_like_changing_facts) and the task has a style to learn.
    ("hybrid", reasons); ("rag", reasons) when there is no style to learn or too few examples teach
    it; (None, []) else."""
    signal = looks_like_changing_facts(facts)
    if signal and not a.style_or_behaviour and not a.style_and_facts:
        return "rag", [signal, "and no style or format to learn (Q4): retrieval alone"]
    if not (a.style_and_facts or signal):
        return None, []
    why = [signal] if signal else ["you said the answers need a trained style and facts from documents"]
    if n is None:
        raise UserError("how many training examples do you have? pass --data FILE or --examples N")
    if n < MIN_EXAMPLES:
        return "rag", [*why, f"only {n} examples (< {MIN_EXAMPLES}) to teach the style: use RAG with a few-shot "
                             "prompt meanwhile"]
    return "hybrid", [*why, "fine-tune for the style and format, retrieve the current documents for the facts "
                            "(rag.docs at train and at inference): a tuned model alone answers from what it "
                            "was trained on, stale once a fact changes; retrieval alone does not learn the style"]


def decide_framework(a: Answers, n: int | None, facts: dict | None = None) -> tuple[str | None, list[str]]:
    """Q1-Q5 and the verdict-changing 'when not' conditions. (verdict, reasons); None = go on to Q6."""
    if a.few_shot_works:
        return "icl", ["a few examples in the prompt already show the task (Q1): use in-context learning"]
    verdict, reasons = decide_hybrid(a, n, facts)
    if verdict is not None:
        return verdict, reasons
    if a.needs_knowledge or a.factual_qa or a.changing_domain:
        why = ("it is about external knowledge (Q2)" if a.needs_knowledge else
               "it is mainly factual QA" if a.factual_qa else "the knowledge changes too often to bake in")
        return "rag", [f"{why}: use retrieval-augmented generation"]
    if n is None:
        raise UserError("how many training examples do you have? pass --data FILE or --examples N")
    if n < GOOD_EXAMPLES:
        return "not-yet", [f"{n} examples (< {GOOD_EXAMPLES:,}, Q3): use ICL/RAG meanwhile and collect more "
                           "high-quality examples"]
    if not a.style_or_behaviour:
        return "rag", ["the task is not about style, behaviour or specialised reasoning (Q4): RAG + ICL "
                       "will probably solve it"]
    if not a.prompting_exhausted:
        return "not-yet", ["prompt engineering is not exhausted (Q5): try harder with prompts first"]
    if not a.has_metric:
        return "not-yet", ["no success metric: build evaluation data first, then fine-tune"]
    return None, [f"{n:,} examples for a style/behaviour/reasoning task, prompting exhausted: fine-tune"]


def pick_seq_len(ctx: Context) -> int:
    if ctx.seq_len:
        return ctx.seq_len
    if ctx.data is None:
        return 512
    need = max(128, ctx.data.tokens_p95)
    return min(4096, 64 * math.ceil(need / 64))


def choose_method(a: Answers, ctx: Context, seq_len: int) -> tuple[str | None, dict, list[str]]:
    """Q6: the first candidate for the priority that fits this hardware, with its micro-batch."""
    order = CANDIDATES["memory" if a.tight_budget and a.priority == "quality" else a.priority]
    if a.tight_budget:
        order = tuple(m for m in order if m != "full")
    if ctx.device.kind == "cpu":   # bitsandbytes 4-bit on CPU runs, but slower than fp32 LoRA
        order = tuple(m for m in order if m != "qlora") + (("qlora",) if "qlora" in order else ())
    tried = []
    for method in order:
        for ckpt in (False, True):
            req = EstimateRequest(model=ctx.model, method=method, seq_len=seq_len, grad_ckpt=ckpt,
                                  gpu=ctx.device.name, num_gpus=ctx.num_gpus)
            fit = _fit(req, ctx)
            if fit["max_batch"] >= 1:
                return method, {**fit, "grad_ckpt": ckpt}, tried
        tried.append(f"{method}: does not fit in {ctx.device.memory_gib:.1f} GiB even with gradient "
                     f"checkpointing at batch 1 x {seq_len} tokens")
    return None, {}, tried


def _fit(req, ctx: Context) -> dict:
    shape, spec = load_shape(req.model), req.run_spec()
    dev = ctx.device
    best = largest_batch(shape, spec, dev)
    if best < 1:
        return {"max_batch": 0}
    micro = train_micro_batch(dev.kind, best)
    spec = dataclasses.replace(spec, batch=micro)
    mem = memory_breakdown(shape, spec, dev.kind)
    fit = fit_on(shape, spec, dev, req, resolve(shape, spec, dev.kind).lora_params)
    return {"max_batch": best, "micro_batch": micro, "peak_gib": round(mem.peak / 1024 ** 3, 2),
            "device": dev.name, "memory_gib": round(dev.memory_gib, 2), "hours": fit.hours, "cost": fit.cost}


def train_micro_batch(device_kind: str, largest: int) -> int:
    """The per-device batch `lmtune train` picks on this device (train.batch_size unset), or the
    largest power of two below it that fits."""
    default = TrainConfig().micro_batch(device_kind)
    return default if largest >= default else 1 << int(math.log2(max(1, largest)))


def train_data_size(ctx: Context, n: int, seq_len: int):
    """The hparams.DataSize train will see: what is left after the held-out test split and the
    validation split (data/holdout.py, the data.val_split default)."""
    left = n - heldout_size(n)
    left -= round(left * DataConfig().val_split)
    d = ctx.data
    if d is None or not d.tokens_total or not d.examples:
        return DataSize(left, None, seq_len, True)
    per = d.tokens_total / d.examples
    half = seq_len // 2   # examples over half a row fill a packed row alone: all, a tail, or none
    long = left if d.tokens_p50 > half else (left // 20 if d.tokens_p95 > half else 0)
    return DataSize(left, int(per * left), seq_len, True, long)


def propose(method: str, fit: dict, a: Answers, ctx: Context, seq_len: int, n: int
            ) -> tuple[dict, dict, list[str]]:
    """(hyperparameters, lmtune config dict, one line per auto value and why) for the chosen method.
    The config says `auto` for learning rate and epochs: train resolves them with the same function
    (lmtune.train.hparams.resolve) on the exact token counts; the numbers here are what that gives now."""
    micro = fit["micro_batch"]
    default = TrainConfig()
    accum = max(1, math.ceil(default.micro_batch(ctx.device.kind) * default.grad_accum / micro))
    shape = load_shape(ctx.model)
    auto = resolve_hparams(AUTO, AUTO, -1, method, ModelSize(shape.hidden, shape.total_params),
                           train_data_size(ctx, n, seq_len), Batch(micro, accum, ctx.num_gpus))
    hp = {"method": method, "learning_rate": auto.learning_rate, "epochs": auto.epochs,
          "warmup_ratio": 0.1, "batch_size": micro, "grad_accum": accum,
          "effective_batch": micro * accum * ctx.num_gpus, "max_length": seq_len,
          "gradient_checkpointing": fit["grad_ckpt"]}
    paths = [str(Path(p).resolve()) for p in ctx.data.paths] if ctx.data else ["train.jsonl"]
    cfg = {"model": {"name_or_path": model_reference(ctx.model)},
           "data": {"train": paths, "max_length": seq_len},
           "method": method,
           "train": {"epochs": AUTO, "learning_rate": AUTO, "batch_size": micro,
                     "grad_accum": accum, "warmup_ratio": 0.1, "gradient_checkpointing": fit["grad_ckpt"]},
           "output": {"dir": ctx.output_dir}}
    if method != "full":
        dropout = 0.1 if n < GOOD_EXAMPLES else 0.05   # seed: more dropout for small datasets
        hp.update(lora_r=16, lora_alpha=32, lora_dropout=dropout)
        cfg["lora"] = {"r": 16, "alpha": 32, "dropout": dropout, "target_modules": "all-linear"}
    from_dict(cfg, "advised config")   # raises ConfigError if anything is off: never write a bad config
    return hp, cfg, auto.lines


def advise(a: Answers, ctx: Context) -> Advice:
    n = ctx.data.examples if ctx.data is not None else a.examples
    seq_len = pick_seq_len(ctx)
    warnings = when_not_warnings(a, n) + data_warnings(ctx.data, seq_len)
    verdict, reasons = decide_framework(a, n, ctx.data.facts if ctx.data else None)
    if verdict not in (None, "hybrid"):
        return Advice(verdict, reasons, warnings)
    method, fit, tried = choose_method(a, ctx, seq_len)
    if method is None:
        return Advice("not-yet", reasons + tried + ["use a smaller model, more GPU memory, or more GPUs "
                                                      "(see `lmtune estimate --model ...`)"], warnings)
    why = {"full": "full fine-tuning fits and you asked for maximum quality",
           "lora": "LoRA fits: most of full fine-tuning's quality at a fraction of the memory",
           "qlora": "QLoRA: a 4-bit base leaves the most memory free"}[method]
    reasons.append(f"{why} ({fit['peak_gib']} GiB peak of {fit['memory_gib']} GiB on {fit['device']}, "
                   f"micro-batch {fit['micro_batch']}, up to {fit['max_batch']})")
    hp, cfg, auto = propose(method, fit, a, ctx, seq_len, n)
    if verdict == "hybrid":
        warnings += with_retrieval(cfg, ctx)
        from_dict(cfg, "advised config")
    return Advice(verdict or method, reasons, warnings, hp, fit, cfg, auto)


def with_retrieval(cfg: dict, ctx: Context) -> list[str]:
    """A hybrid's config retrieves at train and inference (docs/rag-training.md); warnings."""
    if ctx.docs is None:
        return ["no documents given (--docs): set rag.docs in the config to your current documents "
                "(JSONL of {id, text}, or a folder of .txt/.md) before training"]
    cfg["rag"] = {"docs": str(Path(ctx.docs).resolve()), "top_k": 3}
    return []
