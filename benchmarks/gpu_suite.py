"""GPU suite: throughput, peak VRAM and MFU of lmtune's recipe vs the Hugging Face + PEFT padded
baseline, Liger kernels on/off, and full vs LoRA vs QLoRA on a >= 1B Llama, plus lmtune's memory
estimate for each case. Random-init models from configs (no downloads), one fresh process per case.

    # on the H200 (trl, datasets, bitsandbytes, liger-kernel wheels installed in /tmp/site):
    PYTHONPATH=/tmp/site OUT=$OUT python benchmarks/gpu_suite.py            # < 7 minutes
    python benchmarks/gpu_suite.py --big llama3-3b --budget-seconds 300    # if time is short
    python benchmarks/gpu_suite.py --smoke                                  # CPU, tiny shapes, ~2 min

Writes $OUT/gpu_results.jsonl (one JSON line per case; OUT defaults to ./out), $OUT/gpu_summary.md,
and the tail of each case's log under $OUT/logs/. Cases run in priority order; --budget-seconds
skips what would not finish in time (recorded as skipped). FLOPs formula: see gpu_cases.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gpu_cases import Case  # noqa: E402  (light: no torch at import time)


def cases(big: str, smoke: bool) -> list[Case]:
    """Priority order: the 8B comparison first, then the 1B method trio, then extras."""
    if smoke:
        tiny = dict(shape="smoke", seq_len=128, min_len=20, max_len=40, warmup_steps=1, steps=2, batch=2,
                    smoke=True)
        big_kw, small_kw = tiny, tiny
    else:
        big_kw, small_kw = dict(shape=big), dict(shape="llama3-1b")
    tag = "smoke" if smoke else big
    return [
        Case(f"{tag}-lora-packed", **big_kw),
        Case(f"{tag}-lora-peft-padded", recipe="peft-padded", **big_kw),
        Case(f"{tag}-lora-packed-liger", liger=True, **big_kw),
        Case(f"{'smoke' if smoke else '1b'}-lora", **small_kw),
        Case(f"{'smoke' if smoke else '1b'}-qlora", method="qlora", **small_kw),
        Case(f"{'smoke' if smoke else '1b'}-full", method="full", **small_kw),
        Case(f"{tag}-lora-packed-b16", **{**big_kw, "batch": 4 if smoke else 16}),
    ]


def skip_reason(c: Case) -> str | None:
    if c.liger and c.smoke:
        return "liger kernels need CUDA (Triton); not run in --smoke"
    if c.liger and importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed"
    if c.method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    return None


def run_one(c: Case, timeout: float, logs: Path) -> dict:
    result = Path(c.work) / f"{c.name}.result.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    result.unlink(missing_ok=True)
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import gpu_cases as g; "
            f"sys.exit(g.child_main(sys.argv[1], sys.argv[2]))")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error")
    t0 = time.time()
    log = logs / f"{c.name}.log"
    try:
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(dataclasses.asdict(c)), str(result)],
                              capture_output=True, text=True, timeout=timeout, env=env)
        output, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        output += (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        rc = "timeout"
    log.write_text("\n".join(output.splitlines()[-200:]) + "\n")
    if rc == 0 and result.is_file():
        row = json.loads(result.read_text())
    else:
        tail = [ln for ln in output.strip().splitlines() if ln.strip()][-3:]
        row = {"case": c.name, "error": f"rc={rc}: " + " | ".join(tail)[-600:]}
    row["wall_s"] = round(time.time() - t0, 1)
    return row


def _pred(pred: dict) -> str:
    if "peak_gib" in pred:
        return f"{pred['peak_gib']} / {pred['tensors_gib']}"
    return (pred.get("error") or "-")[:60]


def summary(rows: list[dict]) -> str:
    head = ("| case | method | recipe | liger | tokens/s | pad share | MFU | peak alloc GiB | "
            "predicted peak / tensors GiB | wall s |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        if "error" in r or "skipped" in r:
            lines.append(f"| {r['case']} | {r.get('skipped') or r.get('error', '')[:120]} |")
            continue
        pred = r.get("predicted") or {}
        mem = r.get("peak_alloc_gib", r.get("peak_rss_gib"))
        mfu = f"{100 * r['mfu']:.1f}%" if r.get("mfu") is not None else "-"
        lines.append(f"| {r['case']} | {r['method']} | {r['recipe']} | {r['liger']} | {r['tokens_per_s']:,.0f} | "
                     f"{r['pad_share']} | {mfu} | {mem} | {_pred(pred)} | "
                     f"{r['wall_s']} |")
    ok = {r["case"]: r for r in rows if "tokens_per_s" in r}
    notes = []
    for name, r in ok.items():
        if name.endswith("-lora-packed"):
            base = ok.get(name.replace("-lora-packed", "-lora-peft-padded"))
            liger = ok.get(name + "-liger")
            if base:
                notes.append(f"{name}: {r['tokens_per_s'] / base['tokens_per_s']:.2f}x the HF+PEFT padded "
                             f"baseline's useful tokens/s")
            if liger:
                notes.append(f"liger on/off: {liger['tokens_per_s'] / r['tokens_per_s']:.2f}x tokens/s, "
                             f"peak {liger.get('peak_alloc_gib')} vs {r.get('peak_alloc_gib')} GiB")
    return "\n".join(lines) + ("\n\n" + "\n".join(notes) if notes else "") + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--big", default="llama3-8b", choices=["llama3-8b", "llama3-3b"], help="shape of the LoRA comparison")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny shapes: checks the code path")
    p.add_argument("--budget-seconds", type=float, default=390, help="skip cases that would start after this")
    p.add_argument("--steps", type=int, help="timed optimizer steps per case (default 6; smoke 2)")
    p.add_argument("--case-timeout", type=float, default=150)
    p.add_argument("--min-case-seconds", type=float, default=45, help="do not start a case with less time left")
    p.add_argument("--only", help="comma list of case names to run")
    p.add_argument("--work", default="/tmp/lmtune-gpu-suite")
    args = p.parse_args(argv)
    out = Path(os.environ.get("OUT", "out"))
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results = out / "gpu_results.jsonl"
    start, rows = time.time(), []
    for c in cases(args.big, args.smoke):
        if args.only and c.name not in args.only.split(","):
            continue
        c.work = args.work
        if args.steps:
            c.steps = args.steps
        left = args.budget_seconds - (time.time() - start)
        reason = skip_reason(c) or (f"budget: {left:.0f} s left" if left < args.min_case_seconds else None)
        row = {"case": c.name, "skipped": reason} if reason else run_one(c, min(args.case_timeout, left), logs)
        rows.append(row)
        print(json.dumps(row), flush=True)
        with results.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    text = summary(rows)
    (out / "gpu_summary.md").write_text(text)
    print("\n" + text + f"\ntotal {time.time() - start:.0f} s; results in {results}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
