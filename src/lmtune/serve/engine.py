"""Continuous batching for the server: generation runs in steps, one token per active row per
step, over one shared KV cache; finished rows leave the batch and waiting requests join it
between steps, so a short request is never held behind a long one.

One worker thread owns the model. A request is a `Job`. Between steps the worker takes every
waiting job of the batch's served model (up to `max_batch` rows in all), runs their prompts in one
forward pass (left-padded), and splices their KV cache into the batch's: both are left-padded to
the same length, and each row's attention mask and position ids keep it apart from the others.
After every step each row decodes its own new tokens, hands new text to its job's callback
(streaming) and is done at its job's max_tokens, a stop token or a stop string, or when its
client went away (`job.cancelled`). Rows of another served model (another adapter: peft switches
adapters for the whole model) wait until the batch drains, then form the next one.

Decoding follows Generator.generate_kwargs: greedy (argmax) or sampling with the request's
temperature and top_p (and the model's generation config's top_k and repetition penalty), each
sampled row with its own random generator seeded by its request's seed.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Callable

from lmtune.generate import GenerationSettings

# (new text, finish reason or None, error message or None); called from the worker thread.
Callback = Callable[[str, "str | None", "str | None"], None]


@dataclass
class Job:
    model: str                      # served model name (picks the adapter)
    prompt_ids: list[int]
    max_tokens: int
    settings: GenerationSettings    # greedy/temperature/top_p/seed; max_new_tokens unused
    stop: tuple[str, ...] = ()      # the request's own stop strings (the template's always apply)
    callback: Callback | None = None
    cancelled: bool = False         # set by the server when the client goes away
    text: str = ""
    completion_tokens: int = 0
    finish_reason: str | None = None
    answered: bool = False          # the final callback (finish or error) was made
    sources: list | None = None     # retrieved passages put in the prompt (None: no retrieval)
    done: threading.Event = field(default_factory=threading.Event)


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters may still become a stop string (or an incomplete UTF-8
    character): streaming must not send them yet."""
    hold = 1 if text.endswith("\ufffd") else 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:k]):
                hold = max(hold, k)
                break
    return hold


class _Row:
    """One job in the batch: its generated ids, what was streamed, how it picks tokens."""

    def __init__(self, job: Job, gen):
        import torch
        from transformers import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                                  TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

        self.job, self.gen, self.ids, self.sent = job, gen, [], 0
        s, config = job.settings, getattr(gen.model, "generation_config", None)
        self.processors = LogitsProcessorList()
        if getattr(config, "repetition_penalty", None) not in (None, 1.0):
            self.processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
        self.rng = None
        if not s.greedy:
            self.processors.append(TemperatureLogitsWarper(s.temperature))
            if getattr(config, "top_k", None):
                self.processors.append(TopKLogitsWarper(config.top_k))
            if s.top_p < 1.0:
                self.processors.append(TopPLogitsWarper(s.top_p))
            self.rng = torch.Generator().manual_seed(s.seed)

    def choose(self, logits) -> int:
        import torch

        if self.processors:
            seen = torch.tensor([self.job.prompt_ids + self.ids], device=logits.device)
            logits = self.processors(seen, logits[None].float())[0]
        if self.rng is None:
            return int(logits.argmax())
        probs = torch.softmax(logits.float(), dim=-1).cpu()
        return int(torch.multinomial(probs, 1, generator=self.rng))

    def push(self, token: int, stop_ids: set[int]) -> bool:
        """Take the row's next token; True when the row is done."""
        job = self.job
        self.ids.append(token)
        # Decoded exactly as Generator.generate decodes (special tokens skipped, template stops cut).
        text, cut = self.gen.cut_at_stop(self.gen.tokenizer.decode(self.ids, skip_special_tokens=True), job.stop)
        job.completion_tokens = len(self.ids)
        if cut or token in stop_ids:
            job.finish_reason = "stop"
        elif len(self.ids) >= job.max_tokens:
            job.finish_reason = "length"
        if job.finish_reason is None:
            text = text[:len(text) - _held_back(text, (*self.gen.template.stop_strings, *job.stop))]
        if len(text) > self.sent and job.callback:
            job.callback(text[self.sent:], None, None)
        self.sent = max(self.sent, len(text))
        job.text = text
        return job.finish_reason is not None


class _Batch:
    """The active rows of one served model and their shared state: the KV cache (one row per
    job, left-padded), the attention mask over it, each row's next position and its chosen token
    not yet run through the model."""

    def __init__(self, model: str, gen, rows: list[_Row], cache, mask, positions, tokens):
        self.model, self.gen, self.rows = model, gen, rows
        self.cache, self.mask, self.positions, self.tokens = cache, mask, positions, tokens

    def merge(self, other: "_Batch") -> None:
        import torch
        from torch.nn.functional import pad

        width = max(self.mask.shape[1], other.mask.shape[1])

        def left(t, dim_from_end: int):  # zeros on the left of the sequence dimension
            missing = width - t.shape[-dim_from_end]
            return t if missing == 0 else pad(t, (0, 0) * (dim_from_end - 1) + (missing, 0))

        for mine, theirs in zip(self.cache.layers, other.cache.layers):
            mine.keys = torch.cat([left(mine.keys, 2), left(theirs.keys, 2)])
            mine.values = torch.cat([left(mine.values, 2), left(theirs.values, 2)])
        self.mask = torch.cat([left(self.mask, 1), left(other.mask, 1)])
        self.positions = torch.cat([self.positions, other.positions])
        self.tokens = torch.cat([self.tokens, other.tokens])
        self.rows += other.rows

    def keep(self, keep: list[int]) -> None:
        """Only the rows at `keep` stay; columns no remaining row uses are dropped."""
        import torch

        if len(keep) == len(self.rows):
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.rows = [self.rows[i] for i in keep]
        self.mask, self.positions, self.tokens = self.mask[index], self.positions[index], self.tokens[index]
        used = self.mask.any(dim=0).nonzero()
        first = int(used[0]) if len(used) else self.mask.shape[1]
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys, layer.values = layer.keys[index, :, first:], layer.values[index, :, first:]


class Engine:
    """Owns the served models and the worker thread; `submit` is thread-safe."""

    def __init__(self, served: dict, max_batch: int = 16):
        self.served, self.max_batch = served, max_batch
        self.queue: queue.Queue = queue.Queue()
        self.calls = 0          # prompt passes (a group of requests joining the batch together)
        self.rows = 0           # requests that joined a batch
        self.steps = 0          # decoding steps
        self.active = 0         # rows in the batch now
        # Cleared, the worker waits after taking the first job: tests and the benchmark fill a
        # batch deterministically this way. Set in normal operation.
        self.gate = threading.Event()
        self.gate.set()
        self._thread = threading.Thread(target=self._loop, name="lmtune-serve-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        self.queue.put(job)

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        import torch

        waiting: list[Job] = []
        batch: _Batch | None = None
        closing = False
        with torch.inference_mode():
            while True:
                if batch is None and not waiting:
                    if closing:
                        return
                    first = self.queue.get()
                    if first is None:
                        return
                    self.gate.wait()
                    waiting.append(first)
                closing = self._take(waiting) or closing
                for job in [j for j in waiting if j.cancelled]:
                    waiting.remove(job)
                    self._finish(job)
                joining = self._joining(waiting, batch)
                waiting = [j for j in waiting if j not in joining]
                try:
                    if joining:
                        batch = self._join(batch, joining)
                    if batch is not None:
                        batch = self._step(batch)
                except Exception as exc:  # an internal failure: its clients get a 500, not a hang
                    self._fail([r.job for r in batch.rows] if batch else [], joining, exc)
                    batch = None
                self.active = len(batch.rows) if batch else 0

    def _take(self, waiting: list[Job]) -> bool:
        """Move every queued job to `waiting`; True when close() was asked for."""
        while True:
            try:
                job = self.queue.get_nowait()
            except queue.Empty:
                return False
            if job is None:
                return True
            waiting.append(job)

    def _joining(self, waiting: list[Job], batch: _Batch | None) -> list[Job]:
        """The waiting jobs that join now, within max_batch: a new batch takes every waiting job
        of the first waiting job's model; a running one only its model's jobs that came before
        the first job of another model (which then waits for the batch to drain, not forever)."""
        if not waiting:
            return []
        model = batch.model if batch else waiting[0].model
        room = self.max_batch - (len(batch.rows) if batch else 0)
        out = []
        for job in waiting:
            if len(out) >= room or (job.model != model and batch is not None):
                break
            if job.model == model:
                out.append(job)
        return out

    def _join(self, batch: _Batch | None, jobs: list[Job]) -> _Batch | None:
        """Run the jobs' prompts in one forward pass; their first tokens; into the batch."""
        import torch
        from transformers import DynamicCache

        served = self.served[jobs[0].model]
        if batch is None:
            served.activate()
        gen = served.gen
        width = max(len(j.prompt_ids) for j in jobs)
        pad_id = gen.tokenizer.pad_token_id if gen.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([[pad_id] * (width - len(j.prompt_ids)) + j.prompt_ids for j in jobs])
        mask = torch.tensor([[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in jobs])
        device = gen.model.device
        ids, mask = ids.to(device), mask.to(device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = gen.model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache,
                        use_cache=True, logits_to_keep=1)
        self.calls += 1
        self.rows += len(jobs)
        rows = [_Row(j, gen) for j in jobs]
        new = _Batch(jobs[0].model, gen, rows, cache, mask, mask.sum(-1), ids[:, -1])
        self._advance(new, out.logits[:, -1, :])
        if batch is None or not new.rows:  # nothing to splice
            return new if new.rows else batch
        batch.merge(new)
        return batch

    def _step(self, batch: _Batch) -> _Batch | None:
        """One token for every row: run the rows' last tokens, pick the next ones."""
        import torch

        batch.keep([i for i, r in enumerate(batch.rows) if not self._dropped(r.job)])
        if not batch.rows:
            return None
        mask = torch.cat([batch.mask, torch.ones_like(batch.mask[:, :1])], dim=1)
        out = batch.gen.model(input_ids=batch.tokens[:, None], attention_mask=mask,
                              position_ids=batch.positions[:, None], cache=batch.cache, use_cache=True)
        self.steps += 1
        batch.mask, batch.positions = mask, batch.positions + 1
        self._advance(batch, out.logits[:, -1, :])
        return batch if batch.rows else None

    def _advance(self, batch: _Batch, logits) -> None:
        """Each row takes its next token; finished rows are answered and leave the batch."""
        import torch

        stop_ids = set(batch.gen.stop_ids())
        if all(not r.processors for r in batch.rows):
            tokens = logits.argmax(-1).tolist()
        else:
            tokens = [r.choose(logits[i]) for i, r in enumerate(batch.rows)]
        keep = []
        for i, (row, token) in enumerate(zip(batch.rows, tokens)):
            if row.push(token, stop_ids):
                self._finish(row.job)
            else:
                keep.append(i)
        batch.tokens = torch.tensor(tokens, device=batch.mask.device)
        batch.keep(keep)

    def _dropped(self, job: Job) -> bool:
        if job.cancelled:
            self._finish(job)
        return job.cancelled

    @staticmethod
    def _finish(job: Job) -> None:
        if job.cancelled:
            job.finish_reason = job.finish_reason or "cancelled"
        elif job.callback:
            job.callback("", job.finish_reason, None)
        job.answered = True
        job.done.set()

    @staticmethod
    def _fail(active: list[Job], joining: list[Job], exc: Exception) -> None:
        for job in [*active, *joining]:
            if not job.answered and job.callback:
                job.callback("", None, f"{type(exc).__name__}: {exc}")
            job.finish_reason, job.answered = job.finish_reason or "error", True
            job.done.set()
