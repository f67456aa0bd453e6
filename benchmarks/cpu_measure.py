"""What the CPU benchmark measures, identically for every recipe (runs inside the child process).

  tokens      useful tokens: non-pad tokens in the batches the trainer trained on (attention_mask sum;
              padding-free rows carry no pad), counted by wrapping the trainer's own data collator
  slots       every token position computed, pads included (slots - tokens = wasted work)
  loss_tokens positions with a label (!= -100): what the recipe's own loss was taken over
  tokens/s    tokens / train_seconds, where train_seconds is the wall time of trainer.train()
  tokens/cpu-s tokens / CPU seconds (user + system) this process spent in trainer.train(). On a
              machine shared with other jobs wall time swings with their load; CPU time much less
              (with --threads 1 it is the work done; with more threads it includes OpenMP spinning)
  peak RSS    resource.getrusage(RUSAGE_SELF).ru_maxrss of the child at the end (one fresh process
              per recipe, so imports and data count for every recipe the same way)
  eval_loss   response_loss(): mean negative log-likelihood per answer token on the same
              validation examples, each rendered in the layout its recipe trained on; prompt tokens
              and eos are not scored, so a recipe that also trains on the prompt is neither helped
              nor hurt by its own loss definition
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

from cpu_recipes import RECIPES, Job


class CountingCollator:
    """Wraps a data collator and counts what goes through it (see module doc)."""

    def __init__(self, inner):
        self.inner = inner
        self.tokens = self.slots = self.loss_tokens = self.batches = 0

    def __call__(self, features):
        batch = self.inner(features)
        ids = batch["input_ids"]
        mask = batch.get("attention_mask")
        self.slots += ids.numel()
        self.tokens += int(mask.sum()) if mask is not None else ids.numel()
        labels = batch.get("labels")
        if labels is not None:
            self.loss_tokens += int((labels != -100).sum())
        self.batches += 1
        return batch


def response_loss(model, items: list[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 8) -> float:
    """Mean NLL over answer tokens (mask 1), predicting each from everything before it."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            attn = torch.zeros((len(chunk), width), dtype=torch.long)
            scored = torch.zeros((len(chunk), width), dtype=torch.bool)
            for row, (seq, mask) in enumerate(chunk):
                ids[row, :len(seq)] = torch.tensor(seq)
                attn[row, :len(seq)] = 1
                scored[row, :len(seq)] = torch.tensor(mask, dtype=torch.bool)
            logits = model(input_ids=ids, attention_mask=attn).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            target = ids[:, 1:]
            nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            keep = scored[:, 1:]
            total += float(nll[keep].sum())
            count += int(keep.sum())
    return total / max(count, 1)


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def run_job(job: Job) -> dict:
    """Set up, train and score one recipe; returns the result row."""
    import torch

    started = time.time()
    torch.manual_seed(job.seed)
    trained = RECIPES[job.recipe](job)
    trainer = trained.trainer
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    setup_s = time.time() - started
    t0, c0 = time.time(), time.process_time()
    trainer.train()
    train_s, train_cpu = time.time() - t0, time.process_time() - c0
    rss_train = peak_rss_mb()
    pad = trained.tokenizer.pad_token_id if trained.tokenizer.pad_token_id is not None else 0
    t1, c1 = time.time(), time.process_time()
    loss = response_loss(trainer.model, trained.eval_items, pad)
    eval_cpu = time.process_time() - c1
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "label": job.label, "recipe": job.recipe, "model": Path(job.model_dir).name,
        "threads": torch.get_num_threads(), "steps": trainer.state.global_step,
        "batches": counter.batches, "tokens": counter.tokens, "slots": counter.slots,
        "loss_tokens": counter.loss_tokens,
        "pad_share": round(1 - counter.tokens / counter.slots, 3) if counter.slots else None,
        "train_s": round(train_s, 2), "setup_s": round(setup_s, 2), "eval_s": round(time.time() - t1, 2),
        "wall_s": round(time.time() - started, 2),
        "tokens_per_s": round(counter.tokens / train_s, 1), "train_cpu_s": round(train_cpu, 2),
        "tokens_per_cpu_s": round(counter.tokens / train_cpu, 1), "eval_cpu_s": round(eval_cpu, 2),
        "peak_rss_mb": rss_train, "eval_loss": round(loss, 4),
        "final_train_loss": losses[-1] if losses else None,
        "eval_examples": len(trained.eval_items), "info": trained.info, "options": job.options,
    }


def child_main(spec_file: str, result_file: str) -> int:
    job = Job(**json.loads(Path(spec_file).read_text()))
    if job.recipe == "llamafactory":   # its own CLI in its own venv (peer_llamafactory.py)
        from peer_llamafactory import run_job as run_peer

        row = run_peer(job)
    else:
        row = run_job(job)
    Path(result_file).write_text(json.dumps(row))
    return 0
