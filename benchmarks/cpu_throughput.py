"""CPU throughput: the seed's recipe vs TRL at its best vs lmtune's defaults, side by side.

Same model, same bundled SQL examples, same seed, one epoch each, run back to back in ONE
invocation, each recipe in a fresh subprocess (clean peak RSS, no warm caches shared). The work is
fixed by --steps: the seed's recipe takes --steps optimizer steps of 8 x 2 = 16 examples, so every
recipe trains on the same --steps x 16 examples (a seeded sample of the train split); how many
optimizer steps that is for the others depends on their batch shape and is reported.

    nice .venv/bin/python benchmarks/cpu_throughput.py --model random-5m --steps 30
    nice .venv/bin/python benchmarks/cpu_throughput.py --model random-5m --steps 2 --eval-examples 16   # smoke, < 1 min
    ... --recipes seed,trl,lmtune,lmtune-bs1 --rounds 2       # named variants, interleaved rounds

Prints one JSON line per recipe run (also appended to --out) and a markdown table with ratios
to the seed recipe and to TRL (what metric means what: see cpu_measure.py).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_models import SQL_DIR, count_params, resolve_model  # noqa: E402
from cpu_recipes import Job  # noqa: E402

SEED_EXAMPLES_PER_STEP = 16  # the seed's per_device_train_batch_size 8 x gradient_accumulation_steps 2

# label -> (recipe, options). The first three are the comparison; the rest are candidate wins.
VARIANTS = {
    "seed": ("seed", {}),
    "trl": ("trl", {}),                                                    # packing bfd, batch 1 x 4
    "lmtune": ("lmtune", {}),                                              # lmtune's defaults
    # LLaMA-Factory 0.9.5 through llamafactory-cli in its own venv (benchmarks/peers/setup.sh):
    # neat_packing, batch 1 x 4; -t1 with one OpenMP thread; -pack with plain packing (attention
    # across the packed examples, no 4-D mask)
    "llamafactory": ("llamafactory", {}),
    "llamafactory-t1": ("llamafactory", {"threads": 1}),
    "llamafactory-pack": ("llamafactory", {"neat_packing": False, "packing": True}),
    # padding-free without packing: TRL wants max_length=None (no example here is near 512)
    "trl-pf4": ("trl", {"packing": False, "padding_free": True, "max_length": None,
                        "per_device_train_batch_size": 4, "gradient_accumulation_steps": 4}),
    "trl-pack-b4": ("trl", {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1}),
    "lmtune-bs1": ("lmtune", {"overrides": ["train.batch_size=1", "train.grad_accum=4"]}),
    "lmtune-bs1-a16": ("lmtune", {"overrides": ["train.batch_size=1", "train.grad_accum=16"]}),
    "lmtune-bs2": ("lmtune", {"overrides": ["train.batch_size=2", "train.grad_accum=2"]}),
    "lmtune-bs1-fused": ("lmtune", {"overrides": ["train.batch_size=1", "train.grad_accum=4",
                                                  "train.optimizer=adamw_torch_fused"]}),
    "lmtune-bs1-drop0": ("lmtune", {"overrides": ["train.batch_size=1", "train.grad_accum=4",
                                                  "lora.dropout=0"]}),
    "lmtune-bs1-len1024": ("lmtune", {"overrides": ["train.batch_size=1", "train.grad_accum=2",
                                                    "data.max_length=1024"]}),
    "lmtune-bs1-len256": ("lmtune", {"overrides": ["train.batch_size=1", "train.grad_accum=8",
                                                   "data.max_length=256"]}),
    "lmtune-nopack": ("lmtune", {"overrides": ["data.packing=false"]}),   # dynamic padding, 4 x 4
    "lmtune-nopack-len": ("lmtune", {"overrides": ["data.packing=false"],
                                     "sft": {"train_sampling_strategy": "group_by_length"}}),
    "lmtune-nopack-b8": ("lmtune", {"overrides": ["data.packing=false", "train.batch_size=8",
                                                  "train.grad_accum=2"]}),
    "lmtune-bs1-plain": ("lmtune", {"overrides": ["train.batch_size=1", "train.grad_accum=4"],
                                    "loss": "plain"}),
    "lmtune-bs1-plain-drop0": ("lmtune", {"overrides": ["train.batch_size=1", "train.grad_accum=4",
                                                        "lora.dropout=0"], "loss": "plain"}),
    "trl-plain": ("trl", {"loss": "plain"}),
    "trl-drop0": ("trl", {"lora_dropout": 0.0}),
    "lmtune-bs1-keep": ("lmtune", {"overrides": ["train.batch_size=1", "train.grad_accum=4"], "loss": "keep"}),
    "lmtune-bs1-keep-drop0": ("lmtune", {"overrides": ["train.batch_size=1", "train.grad_accum=4",
                                                       "lora.dropout=0"], "loss": "keep"}),
    "lmtune-bs1-plain-drop0-t2": ("lmtune", {"overrides": ["train.batch_size=1", "train.grad_accum=4",
                                                           "lora.dropout=0"], "loss": "plain", "threads": 2}),
    # glibc keeps freed memory (lmtune's train.keep_freed_memory, on by default): off for lmtune,
    # on for TRL through the equivalent environment variables
    "lmtune-bs1-nokeep": ("lmtune", {"overrides": ["train.batch_size=1", "train.grad_accum=4",
                                                   "train.keep_freed_memory=false"]}),
    "lmtune-bs1-m32": ("lmtune", {"overrides": ["train.batch_size=1", "train.grad_accum=4",
                                                "train.keep_freed_memory=false"],
                                  "env": {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}}),
    "trl-keep": ("trl", {"env": {"MALLOC_MMAP_THRESHOLD_": "268435456", "MALLOC_TRIM_THRESHOLD_": "1073741824"}}),
    # the two CPU fast paths (on by default since they were measured), each turned off alone
    "lmtune-fused": ("lmtune", {"overrides": ["train.lm_head=fused"]}),
    "lmtune-sdpa": ("lmtune", {"overrides": ["model.attn_implementation=sdpa"]}),
    "lmtune-t1": ("lmtune", {"threads": 1}),
    # diagnostic for the eval-loss gap to TRL: examples end in "<|im_end|>\n" as in TRL's data
    "lmtune-nl-end": ("lmtune", {"end": "newline"}),
    # every child imports torch before any recipe runs, so libgomp keeps its default waiting (threads
    # spin a while before sleeping) for all recipes; `lmtune train` sets passive waiting before torch
    # loads (lmtune/__init__.py). This variant runs lmtune as the command does.
    "lmtune-cli": ("lmtune", {"env": {"OMP_WAIT_POLICY": "PASSIVE"}}),
    "lmtune-cli-t2": ("lmtune", {"env": {"OMP_WAIT_POLICY": "PASSIVE"}, "threads": 2}),
    "lmtune-bs1-compile": ("lmtune", {"overrides": ["train.batch_size=1", "train.grad_accum=4"],
                                      "sft": {"torch_compile": True}}),
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", help="tiny | random-5m | random-30m | DIR (repeatable; "
                   "default: tiny when built, else random-5m)")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps of the seed recipe (x16 examples)")
    p.add_argument("--recipes", default="seed,trl,lmtune", help=f"comma list of: {', '.join(VARIANTS)}")
    p.add_argument("--variant", action="append", default=[], metavar="LABEL=RECIPE:JSON",
                   help='extra variant, e.g. lm-a8=lmtune:{"overrides":["train.grad_accum=8"]}')
    p.add_argument("--rounds", type=int, default=1, help="repeat the whole recipe list (interleaved)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--eval-examples", type=int, default=200)
    p.add_argument("--threads", type=int, help="OMP/torch threads in each child (default: torch's)")
    p.add_argument("--timeout", type=int, default=3600, help="seconds per recipe run")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "lmtune-bench"))
    p.add_argument("--out", default=str(HERE / "results" / "cpu_throughput.jsonl"))
    p.add_argument("--markdown", help="also write the table to this file")
    return p.parse_args(argv)


def sample_train(work: Path, n: int, seed: int) -> Path:
    rows = (SQL_DIR / "train.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [r for r in rows if r.strip()]
    picked = random.Random(seed).sample(rows, min(n, len(rows)))
    path = work / "data" / f"sql-train-{len(picked)}-seed{seed}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(picked) + "\n", encoding="utf-8")
    return path


def run_child(job: Job, threads: int | None, timeout: int) -> dict:
    """Run `job` in a fresh interpreter; options["threads"] overrides --threads for this variant."""
    threads = job.options.get("threads", threads)
    extra_env = job.options.get("env", {})
    job = Job(**{**asdict(job), "options": {k: v for k, v in job.options.items() if k not in ("threads", "env")}})
    work = Path(job.work)
    work.mkdir(parents=True, exist_ok=True)
    spec, result = work / "job.json", work / "result.json"
    spec.write_text(json.dumps(asdict(job)))
    result.unlink(missing_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TRANSFORMERS_VERBOSITY="error", PYTHONWARNINGS="ignore")
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env.update(extra_env)
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import cpu_measure as m; " \
           f"sys.exit(m.child_main({str(spec)!r}, {str(result)!r}))"
    t0 = time.time()
    try:
        proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"label": job.label, "recipe": job.recipe, "error": f"timeout after {timeout} s"}
    if proc.returncode != 0 or not result.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        return {"label": job.label, "recipe": job.recipe, "error": "\n".join(tail)}
    row = json.loads(result.read_text())
    row["process_s"] = round(time.time() - t0, 2)  # interpreter start + imports + everything
    return row


def ratio(a, b) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def medians(rows: list[dict]) -> list[dict]:
    """One row per (model, label): medians over rounds of the timed metrics."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if "error" not in r:
            groups.setdefault((r["model"], r["label"]), []).append(r)
    out = []
    for (model, label), rs in groups.items():
        m = dict(rs[0], rounds=len(rs))
        for key in ("tokens_per_s", "tokens_per_cpu_s", "train_s", "process_s", "peak_rss_mb", "eval_cpu_s"):
            m[key] = statistics.median(r.get(key) or 0 for r in rs)
        out.append(m)
    return out


def table(rows: list[dict]) -> str:
    """Markdown table of medians over rounds; ratios to the seed and TRL rows of the same model."""
    head = ("| model | recipe | opt. steps | tok/s | tok/cpu-s | vs seed (wall / cpu) | vs trl (wall / cpu) | "
            "train s | process s | peak RSS MB | RSS vs seed | pad share | eval loss |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    agg = medians(rows)
    for r in agg:
        same = {x["label"]: x for x in agg if x["model"] == r["model"]}
        seed, trl = same.get("seed", {}), same.get("trl", {})
        vs = lambda o: (f"{ratio(r['tokens_per_s'], o.get('tokens_per_s'))} / "  # noqa: E731
                        f"{ratio(r['tokens_per_cpu_s'], o.get('tokens_per_cpu_s'))}")
        cpu = f"{r['tokens_per_cpu_s']:,.0f}" if r.get("tokens_per_cpu_s") else "-"
        lines.append(
            f"| {r['model']} | {r['label']} | {r['steps']} | {r['tokens_per_s']:,.0f} | {cpu} | "
            f"{vs(seed)} | {vs(trl)} | {r['train_s']:.1f} | {r.get('process_s', 0):.1f} | {r['peak_rss_mb']:,.0f} | "
            f"{ratio(r['peak_rss_mb'], seed.get('peak_rss_mb'))} | {r['pad_share']:.2f} | {r['eval_loss']:.3f} |")
    for r in rows:
        if "error" in r:
            lines.append(f"| {r.get('model', '')} | {r['label']} | error: {r['error'].splitlines()[-1][:100]} |")
    rounds = max((r.get("rounds", 1) for r in agg), default=1)
    return "\n".join(lines) + (f"\n\n(medians over {rounds} interleaved rounds)" if rounds > 1 else "")


def targets(rows: list[dict]) -> list[str]:
    """The issue's targets on the medians: lmtune vs seed and vs TRL (wall-clock and CPU-time ratios)."""
    out = []
    agg = medians(rows)
    for model in sorted({r["model"] for r in agg}):
        by = {r["label"]: r for r in agg if r["model"] == model}
        lm, seed, trl, lf = by.get("lmtune"), by.get("seed"), by.get("trl"), by.get("llamafactory")
        if lm and lf:   # CPU time of LLaMA-Factory's loop: sampled from /proc (peer_llamafactory.py)
            w, m = lm["tokens_per_s"] / lf["tokens_per_s"], lm["peak_rss_mb"] / lf["peak_rss_mb"]
            c = lm["tokens_per_cpu_s"] / lf["tokens_per_cpu_s"] if lf.get("tokens_per_cpu_s") else w
            ok = min(w, c) >= 1.5 and lm["eval_loss"] <= lf["eval_loss"]
            out.append(f"{model}: lmtune/llamafactory tokens/s {w:.2f}x wall, {c:.2f}x CPU-time; eval loss "
                       f"{lm['eval_loss']:.3f} vs "
                       f"{lf['eval_loss']:.3f} (target >= 1.5x at equal or lower loss: {'met' if ok else 'NOT met'}); "
                       f"peak RSS {m:.2f}x (target <= 0.6: {'met' if m <= 0.6 else 'NOT met'})")
        if lm and seed:
            w, c = lm["tokens_per_s"] / seed["tokens_per_s"], lm["tokens_per_cpu_s"] / seed["tokens_per_cpu_s"]
            m = lm["peak_rss_mb"] / seed["peak_rss_mb"]
            out.append(f"{model}: lmtune/seed tokens/s {w:.2f}x wall, {c:.2f}x CPU-time (target >= 4: "
                       f"{'met' if min(w, c) >= 4 else 'NOT met'}); peak RSS {m:.2f}x (target <= 0.6: "
                       f"{'met' if m <= 0.6 else 'NOT met'})")
        if lm and trl:
            w, c = lm["tokens_per_s"] / trl["tokens_per_s"], lm["tokens_per_cpu_s"] / trl["tokens_per_cpu_s"]
            ok = min(w, c) >= 1.2 and lm["eval_loss"] <= trl["eval_loss"]
            out.append(f"{model}: lmtune/trl tokens/s {w:.2f}x wall, {c:.2f}x CPU-time; eval loss "
                       f"{lm['eval_loss']:.3f} vs {trl['eval_loss']:.3f} (target >= 1.2x at equal or lower "
                       f"loss: {'met' if ok else 'NOT met'})")
    return out


def variants(args) -> list[tuple[str, str, dict]]:
    chosen = []
    for label in [x.strip() for x in args.recipes.split(",") if x.strip()]:
        if label not in VARIANTS:
            raise SystemExit(f"--recipes: unknown {label!r}; known: {', '.join(VARIANTS)}")
        chosen.append((label, *VARIANTS[label]))
    for spec in args.variant:
        label, _, rest = spec.partition("=")
        recipe, _, opts = rest.partition(":")
        chosen.append((label, recipe, json.loads(opts) if opts else {}))
    return chosen


def main(argv=None) -> int:
    args = parse_args(argv)
    work = Path(args.work)
    tiny = HERE.parent / "src" / "lmtune" / "assets" / "base" / "tiny" / "config.json"
    models = args.model or (["tiny"] if tiny.is_file() else ["random-5m"])
    train_file = sample_train(work, args.steps * SEED_EXAMPLES_PER_STEP, args.seed)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in models:
        model_dir = resolve_model(name, work)
        for rnd in range(1, args.rounds + 1):
            for label, recipe, options in variants(args):
                job = Job(recipe=recipe, label=label, model_dir=str(model_dir), train_file=str(train_file),
                          val_file=str(SQL_DIR / "validation.jsonl"), work=str(work / "jobs" / label),
                          seed=args.seed, max_length=args.max_length, eval_examples=args.eval_examples,
                          options=options)
                row = run_child(job, args.threads, args.timeout)
                row.update(options=options, model=name, params=count_params(model_dir), round=rnd,
                           examples=args.steps * SEED_EXAMPLES_PER_STEP)
                rows.append(row)
                print(json.dumps(row), flush=True)
                with out.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
    text = table(rows) + "\n\n" + "\n".join(targets(rows)) + "\n"
    print("\n" + text)
    if args.markdown:
        Path(args.markdown).write_text(text, encoding="utf-8")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
