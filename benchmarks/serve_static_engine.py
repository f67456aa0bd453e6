"""REFERENCE ONLY (benchmarks): lmtune serve's engine before continuous batching (commit 7b3d12d,
src/lmtune/serve/engine.py), kept so benchmarks/serve_throughput.py can compare both in one run.

Batched generation for the server: requests that wait while the model is busy join one
model.generate call (left-padded, like `lmtune generate`), and each row stops on its own.

One worker thread owns the model. A request is a `Job`; the worker takes every waiting job (up to
`max_batch`), groups them by served model and decoding settings, and runs one generate call per
group. A stopping criterion called after every token follows each row: it decodes the row's new
tokens, hands new text to that job's callback (streaming) and marks the row done at the job's own
max_tokens, a stop token or a stop string. Rows never see each other's tokens: each has its own
attention-mask row, and text is read from its own row of the output only.
"""

from __future__ import annotations

import queue
import threading

from transformers import StoppingCriteria


def _key(job) -> tuple:
    """Jobs with equal keys can share one generate call."""
    s = job.settings
    return (job.model, s.greedy, None if s.greedy else (s.temperature, s.top_p, s.seed))


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


class _Rows(StoppingCriteria):
    """Follows each row of one generate call; returns which rows are done."""

    def __init__(self, gen, jobs: list, prompt_len: int):
        self.gen, self.jobs, self.start = gen, jobs, prompt_len
        self.stop_ids = set(gen.stop_ids())
        self.sent = [0] * len(jobs)

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        for row, job in enumerate(self.jobs):
            if job.finish_reason is None:
                self.advance(row, input_ids[row, self.start:].tolist())
        return torch.tensor([j.finish_reason is not None for j in self.jobs], device=input_ids.device)

    def advance(self, row: int, ids: list[int], at_end: bool = False) -> None:
        job = self.jobs[row]
        if job.cancelled:
            job.finish_reason = "cancelled"
            return
        # Decoded exactly as Generator.generate decodes (special tokens skipped, template stops cut).
        text, cut = self.gen.cut_at_stop(self.gen.tokenizer.decode(ids, skip_special_tokens=True), job.stop)
        job.completion_tokens = len(ids)
        if cut or ids[-1] in self.stop_ids:
            job.finish_reason = "stop"
        elif len(ids) >= job.max_tokens or at_end:
            job.finish_reason = "length"
        if job.finish_reason is None:
            text = text[:len(text) - _held_back(text, (*self.gen.template.stop_strings, *job.stop))]
        if len(text) > self.sent[row] and job.callback:
            job.callback(text[self.sent[row]:], None, None)
        self.sent[row] = max(self.sent[row], len(text))
        job.text = text


class StaticEngine:
    """Owns the served models and the worker thread; `submit` is thread-safe."""

    def __init__(self, served: dict, max_batch: int = 16):
        self.served, self.max_batch = served, max_batch
        self.queue: queue.Queue = queue.Queue()
        self.calls = 0          # generate calls made
        self.rows = 0           # requests answered through them
        self.active = self.steps = 0  # read by /health; not tracked by this engine
        # Cleared, the worker waits after taking the first job: tests and the benchmark fill a
        # batch deterministically this way. Set in normal operation.
        self.gate = threading.Event()
        self.gate.set()
        self._thread = threading.Thread(target=self._loop, name="lmtune-serve-engine", daemon=True)
        self._thread.start()

    def submit(self, job) -> None:
        self.queue.put(job)

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            self.gate.wait()
            waiting = [first]
            while len(waiting) < self.max_batch:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.queue.put(None)  # finish what was taken, then stop
                    break
                waiting.append(nxt)
            groups: dict[tuple, list] = {}
            for job in waiting:
                groups.setdefault(_key(job), []).append(job)
            for jobs in groups.values():
                self._run(jobs)

    def _run(self, jobs: list) -> None:
        try:
            self._generate(jobs)
        except Exception as exc:  # an internal failure: every waiting client gets a 500, not a hang
            for job in jobs:
                if not job.answered and job.callback:
                    job.callback("", None, f"{type(exc).__name__}: {exc}")
                job.finish_reason, job.answered = job.finish_reason or "error", True
        finally:
            for job in jobs:
                job.done.set()

    def _generate(self, jobs: list) -> None:
        import torch

        served = self.served[jobs[0].model]
        gen, settings = served.gen, jobs[0].settings
        served.activate()
        gen.tokenizer.padding_side = "left"  # as Generator.generate: answers contiguous at the right
        enc = gen.tokenizer.pad({"input_ids": [j.prompt_ids for j in jobs]}, return_tensors="pt", padding=True)
        enc = {k: v.to(gen.model.device) for k, v in enc.items()}
        rows = _Rows(gen, jobs, enc["input_ids"].shape[1])
        if not settings.greedy:
            torch.manual_seed(settings.seed)
        with torch.no_grad():
            out = gen.model.generate(**enc, max_new_tokens=max(j.max_tokens for j in jobs),
                                     stopping_criteria=[rows], **gen.generate_kwargs(settings))
        self.calls += 1
        self.rows += len(jobs)
        for row, job in enumerate(jobs):
            if job.finish_reason is None:  # generate ended first (all rows at the longest max_tokens)
                rows.advance(row, out[row, rows.start:].tolist(), at_end=True)
            if job.callback and job.finish_reason != "cancelled":
                job.callback("", job.finish_reason, None)
            job.answered = True
