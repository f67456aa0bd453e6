"""The three training recipes the CPU benchmark compares, each returning a trained model plus the
validation examples tokenized the way that recipe trained (for the shared loss in cpu_measure.py).

    seed    the seed tutorial's LoRA recipe on current APIs: transformers Trainer + peft, text in the
            seed's alpaca layout, tokenizer padding to max_length 512, labels = input_ids through
            DataCollatorForLanguageModeling(mlm=False) (loss on prompt and answer), batch 8 x accum 2,
            lr 3e-4, weight decay 0.01, linear schedule. fp16 is dropped (this CPU has no fp16/bf16
            math); its 100 warmup steps become 10% of the run (100 steps would outlast the run).
    trl     TRL SFTTrainer at its best CPU settings: prompt/completion dataset (TRL tokenizes, appends
            eos, completion-only loss), packing bfd (padding-free) into rows of max_length, lmtune's
            LoRA and optimizer hyperparameters so only the pipeline differs. options: any SFTConfig
            field (e.g. {"packing": false, "padding_free": true, "per_device_train_batch_size": 4}),
            plus "loss": "plain" | "keep" (see use_loss) and "lora_dropout".
    lmtune  lmtune's own setup and trainer (lmtune.train.recipe building blocks) with its defaults;
            options: {"overrides": ["train.batch_size=1", ...], "sft": {SFTConfig field: value},
            "loss": "plain" | "keep"}.

Every recipe trains one epoch over the same training file with the same seed, with no evaluation
or checkpoint saving inside the timed loop (both are outside what tokens/s measures).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# LoRA shared by every recipe: the seed's r=16, alpha=32, dropout 0.05 on the seven Llama projections
# (lmtune's default all-linear selects the same seven in a Llama).
LORA = dict(r=16, lora_alpha=32, lora_dropout=0.05, bias="none", task_type="CAUSAL_LM")
SEED_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class Job:
    recipe: str                 # seed | trl | lmtune
    label: str
    model_dir: str
    train_file: str
    val_file: str
    work: str
    seed: int = 42
    max_length: int = 512
    eval_examples: int = 200
    logging_steps: int = 5
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class Trained:
    trainer: Any
    tokenizer: Any
    eval_items: list[tuple[list[int], list[int]]]   # (input_ids, answer_mask) per validation example
    info: dict[str, Any] = field(default_factory=dict)


def read_jsonl(path: str) -> list[dict]:
    import json

    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def alpaca_prompt(row: dict) -> str:
    """The seed's (and lmtune's alpaca template's) prompt layout, up to where the answer starts."""
    if row.get("input", "").strip():
        return f"### Instruction:\n{row['instruction']}\n\n### Input:\n{row['input']}\n\n### Response:\n"
    return f"### Instruction:\n{row['instruction']}\n\n### Response:\n"


def span_items(tokenizer, texts: list[tuple[str, int, int]], add_special: bool) -> list[tuple[list[int], list[int]]]:
    """(full text, answer start, answer end) -> token ids + mask of tokens overlapping the answer."""
    items = []
    for text, start, end in texts:
        enc = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
        mask = [int(e > start and s < end and e > s) for s, e in enc["offset_mapping"]]
        items.append((list(enc["input_ids"]), mask))
    return items


def use_loss(trainer, kind: str | None) -> None:
    """Candidate CPU wins for the loss (TRL's default: a chunked fused LM head that also computes
    entropy and top-1 accuracy for its logs on every step):
      plain  transformers' stock path: logits at every position, cross-entropy inside the model
      keep   the model's own loss function, but the LM head runs only where a label is set (packed
             rows are one padding-free row, so the positions are one index list: the forward's own
             logits_to_keep argument; then model.loss_function with shift_labels)
    Same loss value in all three; only TRL's entropy/mean_token_accuracy logs disappear."""
    import types

    from transformers import Trainer

    if kind == "plain":
        trainer.compute_loss = types.MethodType(Trainer.compute_loss, trainer)
    elif kind == "keep":
        trainer.compute_loss = types.MethodType(_label_positions_loss, trainer)
    elif kind:
        raise ValueError(f"loss: {kind!r} (plain | keep)")


def _label_positions_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
    """The model's own loss function on logits computed only where a label is set."""
    import torch
    from transformers import Trainer

    labels = inputs.get("labels")
    if labels is None or labels.shape[0] != 1:  # padded batches: the stock path
        return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)
    shift = torch.nn.functional.pad(labels[0, 1:], (0, 1), value=-100)  # position t predicts token t+1
    keep = (shift != -100).nonzero().flatten()
    out = model(**{k: v for k, v in inputs.items() if k != "labels"}, logits_to_keep=keep)
    base = self.accelerator.unwrap_model(model)
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    target = shift[keep][None]
    # normalise the way Trainer.training_step expects (it rescales for accumulation otherwise)
    n = num_items_in_batch if self.model_accepts_loss_kwargs else None
    loss = base.loss_function(logits=out.logits, labels=target, vocab_size=out.logits.shape[-1],
                              shift_labels=target, num_items_in_batch=n)
    return (loss, out) if return_outputs else loss


def answer_items(tok, rows: list[dict], chat: bool) -> list[tuple[list[int], list[int]]]:
    """Validation rows in the layout a recipe trained on (the tokenizer's chat template, or the alpaca
    text), with the tokens of the answer text marked: the one scoring rule for every recipe."""
    if chat:
        return span_items(tok, _chat_items(tok, rows), add_special=False)
    spans = [(alpaca_prompt(r) + r["output"], len(alpaca_prompt(r)), len(alpaca_prompt(r)) + len(r["output"]))
             for r in rows]
    return span_items(tok, spans, add_special=True)


def _load(model_dir: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model, tok


# ---------------------------------------------------------------- (a) the seed's recipe

def run_seed(job: Job) -> Trained:
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    model, tok = _load(job.model_dir)
    if tok.pad_token is None:  # the seed's fix: pad with eos
        tok.pad_token = tok.eos_token
        model.config.pad_token_id = model.config.eos_token_id
    model = get_peft_model(model, LoraConfig(target_modules=SEED_TARGETS, **LORA))
    rows = read_jsonl(job.train_file)
    texts = Dataset.from_list([{"text": alpaca_prompt(r) + r["output"]} for r in rows])
    data = texts.map(lambda b: tok(b["text"], truncation=True, max_length=job.max_length, padding="max_length"),
                     batched=True, remove_columns=["text"])
    args = TrainingArguments(
        output_dir=str(Path(job.work) / "ckpt"), num_train_epochs=1, per_device_train_batch_size=8,
        gradient_accumulation_steps=2, learning_rate=3e-4, weight_decay=0.01, warmup_steps=0.1,
        logging_steps=job.logging_steps, eval_strategy="no", save_strategy="no", use_cpu=True,
        report_to="none", seed=job.seed, data_seed=job.seed, disable_tqdm=True, **job.options)
    trainer = Trainer(model=model, args=args, train_dataset=data,
                      data_collator=DataCollatorForLanguageModeling(tokenizer=tok, mlm=False))
    items = answer_items(tok, read_jsonl(job.val_file)[: job.eval_examples], chat=False)
    return Trained(trainer, tok, items, {"layout": "alpaca text, padded to max_length"})


# ---------------------------------------------------------------- (b) TRL at its best

def _prompt_completion(row: dict, conversational: bool) -> dict:
    if conversational:
        user = row["instruction"] + (f"\n\n{row['input']}" if row.get("input", "").strip() else "")
        return {"prompt": [{"role": "user", "content": user}],
                "completion": [{"role": "assistant", "content": row["output"]}]}
    return {"prompt": alpaca_prompt(row), "completion": row["output"]}


def _chat_items(tok, rows: list[dict]) -> list[tuple[str, int, int]]:
    out = []
    for r in rows:
        pc = _prompt_completion(r, True)
        full = tok.apply_chat_template(pc["prompt"] + pc["completion"], tokenize=False)
        start = full.rindex(r["output"])  # the answer is the last message
        out.append((full, start, start + len(r["output"])))
    return out


def run_trl(job: Job) -> Trained:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    model, tok = _load(job.model_dir)
    conversational = bool(getattr(tok, "chat_template", None))  # follow lmtune's auto template choice
    rows = read_jsonl(job.train_file)
    data = Dataset.from_list([_prompt_completion(r, conversational) for r in rows])
    settings = dict(packing=True, packing_strategy="bfd", per_device_train_batch_size=1,
                    gradient_accumulation_steps=4, max_length=job.max_length)
    settings.update(job.options)
    loss = settings.pop("loss", None)
    lora = dict(LORA, lora_dropout=settings.pop("lora_dropout", LORA["lora_dropout"]))
    args = SFTConfig(
        output_dir=str(Path(job.work) / "ckpt"), num_train_epochs=1, learning_rate=2e-4,
        lr_scheduler_type="cosine", warmup_steps=0.1, use_cpu=True, bf16=False,
        activation_checkpointing=False, logging_steps=job.logging_steps, eval_strategy="no",
        save_strategy="no", report_to="none", seed=job.seed, data_seed=job.seed, disable_tqdm=True,
        dataloader_num_workers=0, **settings)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                         peft_config=LoraConfig(target_modules="all-linear", **lora))
    use_loss(trainer, loss)
    items = answer_items(tok, read_jsonl(job.val_file)[: job.eval_examples], chat=conversational)
    layout = "chat template" if conversational else "alpaca prompt/completion"
    return Trained(trainer, tok, items, {"layout": layout, **{k: v for k, v in settings.items()}})


# ---------------------------------------------------------------- (c) lmtune

LMTUNE_BENCH = [
    # what the benchmark needs, not tuning: one epoch, no checkpoint/eval/report inside the timed loop
    "train.epochs=1", "train.load_best=false", "train.save_steps=1000000", "data.val_split=0",
    "output.report=false", "output.overwrite=true", "eval.forgetting_check=false",
    # as measured before train.learning_rate/epochs defaulted to auto and train held out a test split
    "train.learning_rate=2e-4", "data.test_size=0",
]


def run_lmtune(job: Job) -> Trained:
    import lmtune.train.recipe as lt
    from lmtune.config import load_config
    from lmtune.train.cpu_tuning import Target, apply
    from lmtune.run.layout import RunDir

    overrides = [f"model.name_or_path={job.model_dir}", f"data.train={job.train_file}",
                 f"output.dir={Path(job.work) / 'run'}", f"train.seed={job.seed}",
                 f"data.max_length={job.max_length}", f"train.logging_steps={job.logging_steps}",
                 *LMTUNE_BENCH, *job.options.get("overrides", [])]
    cfg = load_config(None, overrides)
    apply(Target(cfg, job.model_dir, training=True))   # threads and allocator as `lmtune train` sets them
    run = RunDir(cfg.output.dir)
    sft = job.options.get("sft")
    if sft:  # SFTConfig knobs lmtune's config does not expose (to measure candidate defaults)
        mapping = lt.training_arguments
        lt.training_arguments = lambda *a, **k: dataclasses.replace(mapping(*a, **k), **sft)
    if job.options.get("end") == "newline":
        _end_with_newline(job.model_dir)
        cfg.data.cache = False   # a cached copy of the unpatched data would skip the patch
    setup = lt._setup(cfg, run, resume=False)
    trainer = lt._build_trainer(cfg, run, setup)
    use_loss(trainer, job.options.get("loss"))
    if setup.template.name not in ("model", "alpaca"):
        raise SystemExit(f"benchmark scores alpaca or chat-template layouts, not {setup.template.name}")
    items = answer_items(setup.tokenizer, read_jsonl(job.val_file)[: job.eval_examples],
                         chat=setup.template.name == "model")
    info = {"layout": f"lmtune template {setup.template.name}", "batch_size": cfg.train.batch_size,
            "grad_accum": cfg.train.grad_accum, "packing": cfg.data.packing, "lr": cfg.learning_rate}
    return Trained(trainer, setup.tokenizer, items, info)


def _end_with_newline(model_dir) -> None:
    """Diagnostic: end every tokenized example as TRL's chat-template rendering does (the template's
    trailing newline after the end-of-turn token, trained) instead of lmtune's appended eos."""
    import lmtune.data.tokenize_batch as tb
    from transformers import AutoTokenizer

    newline = AutoTokenizer.from_pretrained(str(model_dir))("\n", add_special_tokens=False)["input_ids"][-1]
    original = tb.finish_tokens   # what the batched tokenizer calls per example

    def patched(ids, mask, eos, *args, **kwargs):
        out = original(ids, mask, eos, *args, **kwargs)
        if out.input_ids and out.input_ids[-1] == eos:
            out.input_ids[-1] = newline
        return out

    tb.finish_tokens = patched


RECIPES = {"seed": run_seed, "trl": run_trl, "lmtune": run_lmtune}
