"""The trained side of scripts/check_gguf_families.py (--trained STEPS): each tiny family model
(tests/helpers/tiny_families.py, size unchanged) is first fine-tuned by lmtune's own recipe
(lmtune.train.recipe.train, method full: every weight trains) on the bundled SQL task's training
split, rendered by the model's own chat template, for a fixed number of steps and seed. The random
models' next-token scores are nearly flat, so rounding flips greedy tokens; a trained model's are
peaked, as a real model's are, and the quant then measures what it costs a model people export.

The 12 evaluation prompts (check_gguf_llamacpp.PROMPTS) are not in the training data: records in
which one occurs are dropped from the split (`unseen_train_file`: 1 of 2,000). The in-distribution
prompts (`--prompts sql-test`, `sql_test_prompts`) are questions of the task's test split, which the
training never reads; the training data stays the same for both prompt sets.
"""

from __future__ import annotations

import json
from pathlib import Path

STEPS = 100            # ~0.4 epoch of the SQL split: training loss ~6.2 -> ~0.9 on the tiny llama
LEARNING_RATE = 3e-3   # tiny models (hidden 64) move little at 5e-4 within 100 steps
SEED = 0


def sql_records(split: str = "train") -> list[dict]:
    from lmtune.tasks import ASSETS

    with open(ASSETS / "sql" / f"{split}.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def sql_test_prompts(n: int = 12) -> list[str]:
    """The first `n` records of the SQL test split as the user turn lmtune trains on (data/formats.py,
    alpaca records: instruction, blank line, input = the table schema), without the answer; checked
    absent from the training split, so the prompts are in-distribution but unseen."""
    train = "\n".join(json.dumps(r, ensure_ascii=False).lower() for r in sql_records("train"))
    records = sql_records("test")[:n]
    seen = [r["instruction"] for r in records
            if json.dumps(r["instruction"], ensure_ascii=False)[1:-1].lower() in train]
    if seen:
        raise ValueError(f"test questions also in the training split: {seen}")
    return [f"{r['instruction']}\n\n{r['input']}" if r.get("input", "").strip() else r["instruction"] for r in records]


def unseen_train_file(prompts: list[str], out: Path) -> tuple[Path, int]:
    """The SQL training split without the records in which an evaluation prompt occurs
    (case-insensitively, anywhere in the record: "Customers in Oslo?" ends one instruction of 2,000),
    written to `out`; returns the file and how many records were dropped. The comparison is then
    on text the model has not been trained on."""
    keep, dropped = [], 0
    for r in sql_records("train"):
        line = json.dumps(r, ensure_ascii=False)
        if any(p.lower() in line.lower() for p in prompts):
            dropped += 1
        else:
            keep.append(line + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(keep), encoding="utf-8")
    return out, dropped


def train_config(base: Path, run: Path, train_file: Path, steps: int, seed: int):
    from lmtune.config import from_dict

    return from_dict({
        "model": {"name_or_path": str(base)},
        # template "model": the tokenizer's own chat template, the one the evaluation prompts use
        # the task gives the validation split; data.train replaces its training split by the filtered copy
        "data": {"task": "sql", "train": [str(train_file)], "template": "model", "max_length": 512,
                 "packing": True, "cache": False},
        "method": "full",
        "train": {"max_steps": steps, "learning_rate": LEARNING_RATE, "batch_size": 1, "grad_accum": 4,
                  "warmup_ratio": 0.05, "scheduler": "cosine", "seed": seed, "logging_steps": 10,
                  "load_best": False, "threads": 1},
        # the task's own evaluation (SQL execution, forgetting check, report) is not what is measured here
        "eval": {"after_train": False, "forgetting_check": False},
        "output": {"dir": str(run), "report": False},
    }, "check_gguf_families --trained")


def train_family(base: Path, run: Path, prompts: list[str], steps: int = STEPS, seed: int = SEED) -> tuple[Path, dict]:
    """Fine-tune the model at `base` into the run directory `run`, on the SQL split without the
    records that hold one of `prompts`; returns the run and what the rows say of the training."""
    from lmtune.train.recipe import train

    train_file, dropped = unseen_train_file(prompts, run.parent / f"{run.name}-train.jsonl")
    res = train(train_config(base, run, train_file, steps, seed), quiet=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    val = [r["eval_loss"] for r in rows if "eval_loss" in r]
    return run, {"trained_steps": res.metrics.get("global_step", steps), "train_records_dropped": dropped,
                 "train_loss": round(res.metrics["final_train_loss"], 4),
                 "val_loss": round(val[-1], 4) if val else None,
                 "train_seconds": res.metrics.get("train_seconds")}


def peakedness(model, prompts: list[list[int]], greedy: list[list[int]]) -> dict:
    """At each greedy step of transformers (teacher-forced over prompt + its greedy tokens): the top
    token's probability, and its logit margin over the second relative to the largest |logit|, on the
    scale of the script's logit difference (a quant flips a token only where its error exceeds the
    margin). Medians over all steps of all prompts, and the smallest margin."""
    import torch

    probs, margins = [], []
    for prompt_ids, generated in zip(prompts, greedy):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([prompt_ids + generated])).logits[0, len(prompt_ids) - 1:-1].double()
        top2 = logits.topk(2, dim=-1).values
        margins += ((top2[:, 0] - top2[:, 1]) / logits.abs().max(-1).values).tolist()
        probs += logits.softmax(-1).max(-1).values.tolist()
    probs, margins = sorted(probs), sorted(margins)
    return {"top1_prob_median": round(probs[len(probs) // 2], 3),
            "top_margin_rel_median": float(f"{margins[len(margins) // 2]:.2e}"),
            "top_margin_rel_min": float(f"{margins[0]:.2e}")}
