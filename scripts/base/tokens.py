"""Documents -> one flat stream of token ids, and windows over it for training and evaluation.

Documents are rendered (chat ones through the tokenizer's own chat template, so pretraining sees
exactly the turn structure fine-tuning will use), each followed by <|endoftext|>, and
concatenated. Training windows start at random offsets (seeded); evaluation windows tile the
held-out stream without overlap.
"""

from __future__ import annotations

import multiprocessing as mp
from typing import Callable, Sequence

import numpy as np
import torch

_TOKENIZER = None      # set in the parent before forking workers; inherited by them


def render(tokenizer, doc: dict) -> str:
    if "messages" in doc:
        return tokenizer.apply_chat_template(doc["messages"], tokenize=False) + tokenizer.eos_token
    return doc["text"] + tokenizer.eos_token


def encode(tokenizer, docs: Sequence[dict]) -> np.ndarray:
    texts = [render(tokenizer, d) for d in docs]
    ids = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    return np.fromiter((i for e in ids for i in e.ids), dtype=np.uint16)


def _encode_job(job):
    make_docs, args = job
    return encode(_TOKENIZER, make_docs(*args))


def encode_jobs(tokenizer, jobs: list[tuple[Callable, tuple]], workers: int) -> list[np.ndarray]:
    """Run `make_docs(*args)` + encode for each job, in `workers` forked processes, in order."""
    global _TOKENIZER
    _TOKENIZER = tokenizer
    if workers <= 1:
        return [_encode_job(j) for j in jobs]
    with mp.get_context("fork").Pool(workers) as pool:
        return pool.map(_encode_job, jobs, chunksize=1)


class MixtureSampler:
    """Random (seq_len + 1)-token windows; each row comes from one source stream, picked with
    fixed weights. The weights, not the stream sizes, set the data mixture: the stdlib text is
    small and fixed while generated text grows with the budget, and a plain concatenation would
    drown the real English as the budget grows."""

    def __init__(self, streams: dict[str, np.ndarray], weights: dict[str, float], seq_len: int,
                 seed: int):
        for name, s in streams.items():
            if len(s) <= seq_len + 1:
                raise ValueError(f"stream {name!r} has {len(s)} tokens; need > {seq_len + 1}")
        self.names = sorted(streams)
        self.streams = [torch.from_numpy(streams[n].astype(np.int64)) for n in self.names]
        w = torch.tensor([weights[n] for n in self.names], dtype=torch.float64)
        self.probs = w / w.sum()
        self.seq_len = seq_len
        self.gen = torch.Generator().manual_seed(seed)

    def batch(self, batch_size: int) -> torch.Tensor:
        which = torch.multinomial(self.probs, batch_size, replacement=True, generator=self.gen)
        rows = []
        for i in which.tolist():
            s = self.streams[i]
            start = int(torch.randint(0, len(s) - self.seq_len - 1, (1,), generator=self.gen))
            rows.append(s[start:start + self.seq_len + 1])
        return torch.stack(rows)


def eval_windows(stream: np.ndarray, seq_len: int, max_windows: int) -> torch.Tensor:
    """Non-overlapping windows tiling the held-out stream (evenly spaced if there are more)."""
    n = (len(stream) - 1) // seq_len
    picks = np.linspace(0, n - 1, num=min(n, max_windows)).astype(np.int64)
    s = torch.from_numpy(stream.astype(np.int64))
    return torch.stack([s[p * seq_len: p * seq_len + seq_len + 1] for p in picks])
