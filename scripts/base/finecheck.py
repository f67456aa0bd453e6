"""Is the built base a useful starting point? A few minutes of fine-tuning, base vs random init.

Data: question -> SQL chat pairs from this project's own generator, over tables (hotels, guests)
that pretraining never saw and that are not the bundled task's, so the check measures transfer
to a new schema; prompts are deduped between train and eval. Four arms, same data, same steps, same loop: {pretrained, random init}
x {full fine-tuning, LoRA r=16 on all linear layers}. Loss only on the assistant reply (the
template's generation markers). Reported: training loss along the way, eval loss, greedy exact
match, and how often every quoted value / number of the gold query appears in the prediction
(the copying skill the first prototype base lacked; docs/base-model.md).

The loop is a few lines of plain PyTorch so the four arms differ in nothing but the start point;
the real fine-tuning path (TRL) is lmtune's and is evaluated on the bundled tasks by the lead.
"""

from __future__ import annotations

import random
import re
import time
from pathlib import Path
from typing import Callable

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from . import synth_sql

INSTRUCTION = "Write a SQL query that answers the question."


def make_pairs(seed: int, n_train: int, n_eval: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(f"lmtune-base/finecheck/{seed}")
    seen, rows = set(), []
    while len(rows) < n_train + n_eval:
        q, sql, tables = synth_sql.pair(rng, pool=synth_sql.CHECK_TABLES)
        if q in seen:
            continue
        seen.add(q)
        user = f"{INSTRUCTION}\nTables: {synth_sql.schema_line(tables)}\n{q}"
        rows.append({"messages": [{"role": "user", "content": user},
                                  {"role": "assistant", "content": sql}]})
    return rows[:n_train], rows[n_train:]


def encode(tok, rows: list[dict]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for r in rows:
        enc = tok.apply_chat_template(r["messages"], tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
        ids = torch.tensor(enc["input_ids"])
        mask = torch.tensor(enc["assistant_masks"], dtype=torch.bool)
        out.append((ids, torch.where(mask, ids, torch.full_like(ids, -100))))
    return out


def _pad(batch, pad_id):
    n = max(len(i) for i, _ in batch)
    ids = torch.full((len(batch), n), pad_id)
    labels = torch.full((len(batch), n), -100)
    attn = torch.zeros((len(batch), n), dtype=torch.long)
    for k, (i, lab) in enumerate(batch):
        ids[k, :len(i)], labels[k, :len(i)], attn[k, :len(i)] = i, lab, 1
    return ids, labels, attn


@torch.no_grad()
def eval_loss(model, data, pad_id, bs=16) -> float:
    model.eval()
    tot, cnt = 0.0, 0
    for i in range(0, len(data), bs):
        ids, labels, attn = _pad(data[i:i + bs], pad_id)
        n = int((labels[:, 1:] != -100).sum())
        tot += model(input_ids=ids, attention_mask=attn, labels=labels).loss.item() * n
        cnt += n
    model.train()
    return tot / cnt


@torch.no_grad()
def generate_scores(model, tok, rows, max_new=48) -> dict:
    model.eval()
    tok.padding_side = "left"
    exact = slots = 0
    for i in range(0, len(rows), 16):
        chunk = rows[i:i + 16]
        prompts = [tok.apply_chat_template(r["messages"][:1], tokenize=False,
                                           add_generation_prompt=True) for r in chunk]
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False)
        for r, o in zip(chunk, out[:, enc["input_ids"].shape[1]:]):
            pred = tok.decode(o, skip_special_tokens=True).strip()
            gold = r["messages"][1]["content"]
            exact += pred == gold
            vals = re.findall(r"'[^']*'|\b\d+\b", gold)
            slots += all(v in pred for v in vals)
    tok.padding_side = "right"
    model.train()
    return {"exact_match": round(exact / len(rows), 3), "all_values_copied": round(slots / len(rows), 3)}


def finetune(model, train, evals, pad_id, lr, steps, bs, seed) -> dict:
    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    gen = random.Random(seed)
    curve, start = [], time.time()
    for step in range(1, steps + 1):
        batch = gen.sample(train, bs)
        ids, labels, attn = _pad(batch, pad_id)
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 10 == 0 or step == 1:
            curve.append((step, round(loss.item(), 3)))
    return {"train_loss_curve": curve, "eval_loss": round(eval_loss(model, evals, pad_id), 4),
            "seconds": round(time.time() - start, 1)}


def _arm(base_dir: Path, pretrained: bool, method: str, seed: int):
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if not pretrained:
        torch.manual_seed(seed + 1)
        model = AutoModelForCausalLM.from_config(model.config, dtype=torch.float32)
    if method == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                                 target_modules="all-linear", task_type="CAUSAL_LM"))
    return model


def run(base_dir: Path, seed: int, log: Callable[[dict], None], steps: int = 60,
        n_train: int = 256, n_eval: int = 64) -> dict:
    tok = AutoTokenizer.from_pretrained(base_dir)
    train_rows, eval_rows = make_pairs(seed, n_train, n_eval)
    train, evals = encode(tok, train_rows), encode(tok, eval_rows)
    results = {"data": {"train": n_train, "eval": n_eval, "steps": steps, "batch": 16,
                        "generator": "scripts/base/synth_sql.py CHECK_TABLES (hotels/guests, unseen in pretraining)"}}
    for method, lr in (("full", 1e-3), ("lora", 2e-3)):
        for pretrained in (True, False):
            name = f"{method}_{'pretrained' if pretrained else 'random'}"
            model = _arm(base_dir, pretrained, method, seed)
            before = round(eval_loss(model, evals, tok.pad_token_id), 4)
            res = finetune(model, train, evals, tok.pad_token_id, lr, steps, 16, seed)
            res |= {"eval_loss_before": before, "lr": lr} | generate_scores(model, tok, eval_rows)
            results[name] = res
            log({"check": name, **res})
    results["summary"] = summary(results)
    return results


def summary(r: dict) -> str:
    rows = ["| arm | eval loss before | after | exact match | all values copied |",
            "| --- | --- | --- | --- | --- |"]
    for k in ("full_pretrained", "full_random", "lora_pretrained", "lora_random"):
        a = r[k]
        rows.append(f"| {k.replace('_', ', ')} | {a['eval_loss_before']} | {a['eval_loss']} | "
                    f"{a['exact_match']:.0%} | {a['all_values_copied']:.0%} |")
    d = r["data"]
    head = (f"Fine-tuning check: {d['train']} generated question->SQL chat pairs over tables "
            f"the base never saw (hotels, guests), {d['steps']} steps of batch {d['batch']} (full lr 1e-3, LoRA r=16 "
            f"all-linear lr 2e-3), scored on {d['eval']} unseen prompts (greedy decoding).")
    return head + "\n\n" + "\n".join(rows)
