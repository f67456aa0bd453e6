"""The base model's architecture and its pretraining loop.

A plain loop (AdamW, linear warmup then cosine decay), not transformers.Trainer: the data is a
token stream sampled by offset (no Dataset/collator to build), the run must stop on a wall-clock
budget whose step count is only known after measuring speed on the machine at hand, and the
loop is ~60 lines anyone can read. lmtune's own fine-tuning goes through TRL/Trainer; this is
only the one-time pretraining of the shipped base.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from .tokenizer import EOS, PAD


@dataclass(frozen=True)
class Arch:
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 4
    intermediate: int = 768
    max_positions: int = 1024


@dataclass
class Schedule:
    """Linear warmup then cosine decay over *progress* in [0, 1]: steps done / total_steps with
    a token budget (deterministic), or seconds spent / deadline with a time budget (robust on a
    shared machine, where speed measured early does not predict speed later)."""
    seq_len: int
    batch_size: int
    lr: float
    total_steps: int = 0            # 0: no step budget, only the time budget (deadline_s)
    warmup_frac: float = 0.03
    min_lr_frac: float = 0.1
    weight_decay: float = 0.1
    eval_every: int = 200
    history: list = field(default_factory=list)

    def lr_at(self, progress: float) -> float:
        if progress < self.warmup_frac:
            return self.lr * max(progress / self.warmup_frac, 0.01)
        done = min(1.0, (progress - self.warmup_frac) / (1 - self.warmup_frac))
        return self.lr * (self.min_lr_frac + (1 - self.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * done)))


def make_model(arch: Arch, tokenizer, seed: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=arch.hidden, num_hidden_layers=arch.layers,
        num_attention_heads=arch.heads, num_key_value_heads=arch.kv_heads,
        intermediate_size=arch.intermediate, max_position_embeddings=arch.max_positions,
        rope_theta=10000.0, tie_word_embeddings=True, initializer_range=0.02,
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS), bos_token_id=None)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def _autocast(device: torch.device):
    # bf16 autocast on CUDA only: this CPU has no bf16 instructions (lmtune/models.py resolve_precision)
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def perplexity(model, windows: torch.Tensor, device: torch.device, batch: int = 16) -> float:
    nll, count = nll_sum(model, windows, device, batch)
    return math.exp(nll / max(1, count))


@torch.no_grad()
def nll_sum(model, windows: torch.Tensor, device: torch.device, batch: int = 16) -> tuple[float, int]:
    """Summed next-token negative log-likelihood over `windows`, and the number of predictions."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        x = windows[i:i + batch].to(device)
        with _autocast(device):
            loss = model(input_ids=x, labels=x).loss
        n = x.numel() - len(x)           # predicted positions in this batch
        total, count = total + loss.float().item() * n, count + n
    model.train()
    return total, count


def train(model, sampler, sched: Schedule, device: torch.device, deadline_s: float,
          evals: dict[str, torch.Tensor], log: Callable[[dict], None]) -> dict:
    """Train in place until total_steps (if set) or deadline_s seconds, whichever comes first:
    the schedule follows whichever budget is closer to being used up."""
    model.to(device).train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    other = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": sched.weight_decay},
                             {"params": other, "weight_decay": 0.0}],
                            lr=sched.lr, betas=(0.9, 0.95), eps=1e-8)
    by_steps = sched.total_steps > 0
    start, step, tokens, progress = time.time(), 0, 0, 0.0
    while progress < 1.0:
        x = sampler.batch(sched.batch_size).to(device, non_blocking=True)
        for g in opt.param_groups:
            g["lr"] = sched.lr_at(progress)
        with _autocast(device):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step, tokens = step + 1, tokens + x.numel() - len(x)
        progress = (time.time() - start) / deadline_s
        if by_steps:
            progress = max(progress, step / sched.total_steps)
        if step % sched.eval_every == 0 or progress >= 1.0:
            row = {"step": step, "tokens": tokens, "loss": round(loss.item(), 4),
                   "lr": round(sched.lr_at(progress), 6), "elapsed_s": round(time.time() - start, 1)}
            if progress < 1.0 and step % (sched.eval_every * 5) == 0:   # the caller evaluates the end
                row |= {f"ppl_{k}": round(perplexity(model, w, device), 2) for k, w in evals.items()}
            sched.history.append(row)
            log(row)
    bound = "tokens" if by_steps and step >= sched.total_steps else "minutes"
    return {"steps": step, "tokens": tokens, "train_s": round(time.time() - start, 1),
            "stopped_by": bound}
