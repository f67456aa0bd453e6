#!/usr/bin/env python
"""Build lmtune's embedded base model ("tiny") from scratch, deterministically from a seed.

    python scripts/build_base.py                      # CPU build, <= 20 min on 2 cores
    python scripts/build_base.py --smoke              # ~1 minute, writes build/base-smoke
    python scripts/build_base.py --device cuda --minutes 2.4 --tokens 150000000 \
        --synth-docs 600000 --seq-len 512 --batch-size 128 \
        --mix stdlib=0.05,text=0.42,sql=0.3,json=0.23  # the shipped build (one H200, ~95 s)
    python scripts/build_base.py --check-only         # fine-tune it vs random init (CPU)

Stages: stdlib text (cached in --work) -> byte-level BPE tokenizer (cached) -> generated text
-> token streams (train / held-out) -> Llama pretraining -> held-out perplexity -> save in
Hugging Face layout (+ build_info.json, README.md) -> optional fine-tunability check (--check).
See docs/base-model.md for why the data and the tokenizer look the way they do.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")   # we fork workers ourselves
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))   # scripts/ -> `base` package

import numpy as np  # noqa: E402
import torch  # noqa: E402

from base import card, corpus, tokens  # noqa: E402
from base import tokenizer as tok_mod  # noqa: E402
from base.pretrain import Arch, Schedule, make_model, nll_sum, train  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "src" / "lmtune" / "assets" / "base" / "tiny"
TOKENIZER_SYNTH_DOCS = 20_000     # generated docs the tokenizer is trained on (fixed: budget-free)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=None, help=f"model dir (default {DEFAULT_OUT}; "
                   "build/base-smoke with --smoke)")
    p.add_argument("--work", type=Path, default=REPO / "build" / "base-work",
                   help="cache for the stdlib text and the tokenizer (carry it to rebuild elsewhere)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--minutes", type=float, default=20.0,
                   help="wall-clock budget for the whole build; training fills what is left")
    p.add_argument("--tokens", type=int, default=0,
                   help="train on this many tokens (a deterministic schedule), unless --minutes "
                        "runs out first; 0: train until --minutes runs out")
    p.add_argument("--synth-docs", type=int, default=60_000, help="generated training documents")
    p.add_argument("--mix", default="stdlib=0.3,text=0.35,sql=0.2,json=0.15",
                   help="share of training rows drawn from each source")
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--intermediate", type=int, default=768)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--workers", type=int, default=0, help="processes for corpus work (0: cores)")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--check", action="store_true",
                   help="after building, fine-tune it and a random init on generated SQL and compare")
    p.add_argument("--prepare-only", action="store_true",
                   help="stop after the stdlib text and the tokenizer are cached in --work")
    p.add_argument("--check-only", action="store_true",
                   help="run the fine-tuning check on an existing --out and add it to build_info.json")
    p.add_argument("--smoke", action="store_true", help="tiny everything: a ~1 minute end-to-end test")
    args = p.parse_args(argv)
    if args.smoke:
        args.minutes, args.synth_docs, args.vocab = 1.0, 3000, 1024
        args.hidden, args.layers, args.heads, args.intermediate = 64, 2, 2, 128
        args.batch_size, args.seq_len, args.eval_every = 8, 128, 10
        args.tokens = args.tokens or 40 * 8 * 128
        args.work = args.work.with_name(args.work.name + "-smoke")
    args.out = args.out or (REPO / "build" / "base-smoke" if args.smoke else DEFAULT_OUT)
    args.workers = args.workers or os.cpu_count() or 1
    return args


def log(row: dict) -> None:
    print(json.dumps(row), flush=True)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def build_tokenizer(args, stdlib_train: list[dict]):
    """Train (or reuse from --work) the tokenizer; its input does not depend on the budget."""
    digest = hashlib.sha256("".join(d["text"] for d in stdlib_train).encode()).hexdigest()[:10]
    path = args.work / f"tokenizer-s{args.seed}-v{args.vocab}-{digest}.json"
    if not path.exists():
        n_chunks = TOKENIZER_SYNTH_DOCS // corpus.CHUNK_DOCS
        synth = [d for c in corpus.plan_chunks(TOKENIZER_SYNTH_DOCS)[:n_chunks] if not c.heldout
                 for d in corpus.synth_chunk(args.seed, c)]
        texts = [corpus.plain_text(d) for d in stdlib_train + synth]
        raw = tok_mod.train(texts, args.vocab)
        path.parent.mkdir(parents=True, exist_ok=True)
        raw.save(str(path))
    from tokenizers import Tokenizer
    return tok_mod.wrap(Tokenizer.from_file(str(path)), max_length=1024), path


_STDLIB: list[dict] = []


def _stdlib_slice(start: int, end: int) -> list[dict]:
    return _STDLIB[start:end]


def encode_corpus(args, tokenizer, stdlib_train, stdlib_held) -> tuple[dict, dict, dict]:
    """Token streams per source {name: ids} for training and for held-out evaluation, + stats."""
    global _STDLIB
    plan = corpus.plan_chunks(args.synth_docs)
    _STDLIB = stdlib_train + stdlib_held
    step, n_train = 500, len(stdlib_train)
    jobs = [(_stdlib_slice, (i, min(i + step, n_train))) for i in range(0, n_train, step)]
    n_std = len(jobs)
    jobs += [(_stdlib_slice, (n_train, len(_STDLIB)))]
    jobs += [(corpus.synth_chunk, (args.seed, c)) for c in plan]
    arrays = tokens.encode_jobs(tokenizer, jobs, args.workers)
    train = {"stdlib": np.concatenate(arrays[:n_std])}
    held = {"stdlib": arrays[n_std]}
    synth = list(zip(arrays[n_std + 1:], plan))
    for kind in corpus.SYNTH_KINDS:
        train[kind] = np.concatenate([a for a, c in synth if c.kind == kind and not c.heldout])
        held[kind] = np.concatenate([a for a, c in synth if c.kind == kind and c.heldout])
    stats = {"stdlib_docs": {"train": n_train, "heldout": len(stdlib_held)},
             "stdlib_chars": {"train": sum(len(d["text"]) for d in stdlib_train),
                              "heldout": sum(len(d["text"]) for d in stdlib_held)},
             "synth_docs": {"train": sum(corpus.CHUNK_DOCS for c in plan if not c.heldout),
                            "heldout": sum(corpus.CHUNK_DOCS for c in plan if c.heldout)},
             "train_tokens": {k: int(len(v)) for k, v in train.items()},
             "heldout_tokens": {k: int(len(v)) for k, v in held.items()}}
    return train, held, stats


def parse_mix(text: str) -> dict[str, float]:
    mix = {k: float(v) for k, v in (part.split("=") for part in text.split(","))}
    want = {"stdlib", *corpus.SYNTH_KINDS}
    if set(mix) != want:
        raise SystemExit(f"--mix must name exactly {sorted(want)}; got {sorted(mix)}")
    return mix


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.check_only:
        return run_check(args)
    t0 = time.time()
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    times = {}
    docs = corpus.stdlib_docs(args.work / "stdlib_docs.jsonl")
    stdlib_train = [d for d in docs if not corpus.is_heldout_source(d["source"])]
    stdlib_held = [d for d in docs if corpus.is_heldout_source(d["source"])]
    times["stdlib_s"] = round(time.time() - t0, 1)
    tokenizer, tok_path = build_tokenizer(args, stdlib_train)
    times["tokenizer_s"] = round(time.time() - t0 - sum(times.values()), 1)
    if args.prepare_only:
        log({"event": "prepared", "work": str(args.work), "tokenizer": tok_path.name, **times})
        return 0
    train_streams, held_streams, data_stats = encode_corpus(args, tokenizer, stdlib_train,
                                                            stdlib_held)
    times["encode_s"] = round(time.time() - t0 - sum(times.values()), 1)
    log({"event": "data", **data_stats, **times})

    arch = Arch(args.hidden, args.layers, args.heads, args.heads, args.intermediate)
    model = make_model(arch, tokenizer, args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    per_step = args.batch_size * args.seq_len
    sched = Schedule(seq_len=args.seq_len, batch_size=args.batch_size, lr=args.lr,
                     total_steps=args.tokens // per_step if args.tokens else 0,
                     eval_every=args.eval_every)
    # 32 windows per source: ~8k-16k predictions each, enough for a stable perplexity
    evals = {k: tokens.eval_windows(v, args.seq_len, 32) for k, v in held_streams.items()}
    mix = parse_mix(args.mix)
    sampler = tokens.MixtureSampler(train_streams, mix, args.seq_len, args.seed)
    reserve = 30 + 0.02 * args.minutes * 60         # final eval + save
    deadline = args.minutes * 60 - (time.time() - t0) - reserve
    log({"event": "model", "params": n_params, "device": str(device), "train_budget_s": round(deadline)})
    result = train(model, sampler, sched, device, deadline, evals, log)
    times["train_s"] = result["train_s"]

    nll = {k: nll_sum(model, w, device) for k, w in evals.items()}
    final = {k: round(math.exp(s / c), 3) for k, (s, c) in nll.items()}
    final["all"] = round(math.exp(sum(s for s, _ in nll.values()) / sum(c for _, c in nll.values())), 3)
    card.save(args.out, model.to("cpu"), tokenizer)
    times["total_s"] = round(time.time() - t0, 1)
    info = card.build_info(args=args, arch=asdict(arch), n_params=n_params, sched=sched,
                           result=result, data=data_stats, heldout_ppl=final, times=times,
                           device=device, tokenizer_path=tok_path, mix=mix)
    card.write_info(args.out, info)
    log({"event": "done", "heldout_ppl": final, **times, "out": str(args.out)})
    return run_check(args) if args.check else 0


def run_check(args) -> int:
    from base import finecheck
    info = json.loads((args.out / "build_info.json").read_text(encoding="utf-8"))
    info["fine_tune_check"] = finecheck.run(args.out, args.seed, log)
    card.write_info(args.out, info)
    print(info["fine_tune_check"]["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
