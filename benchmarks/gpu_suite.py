"""GPU suite: lmtune vs HF + PEFT (padded, the seed's recipe) vs TRL at its best vs Unsloth on a
Llama-3-8B-shaped model (random weights), LoRA and QLoRA in bf16: useful tokens/s, peak VRAM, MFU,
and lmtune's memory estimate for each case; then Liger on/off and full vs LoRA vs QLoRA on a 1B.
Random-init models from configs (no downloads), one fresh process per case.

    # here: bash benchmarks/gpu_wheels.sh (trl, datasets, bitsandbytes, liger-kernel; Unsloth apart)
    # on the H200, one call (carry .gpu-site), under 10 minutes:
    tar -xzf .gpu-site/sites.tar.gz -C /tmp && PYTHONPATH=/tmp/gpu-site/lmtune OUT=$OUT \
        python3 benchmarks/gpu_suite.py --unsloth-site /tmp/gpu-site/unsloth
    python benchmarks/gpu_suite.py --big llama3-3b --budget-seconds 300    # if time is short
    python benchmarks/gpu_suite.py --smoke                                  # CPU, tiny shapes

Writes $OUT/gpu_results.jsonl (one JSON line per case; OUT defaults to ./out), $OUT/gpu_summary.md
(table + the issue's targets), and the tail of each case's log under $OUT/logs/. Cases run in
priority order; --budget-seconds skips what would not finish in time (recorded as skipped). FLOPs
and MFU formula: see gpu_cases.py.
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
    """Priority order: the 8B peer comparison (LoRA, then QLoRA), then the older extras."""
    if smoke:
        tiny = dict(shape="smoke", seq_len=128, min_len=20, max_len=40, warmup_steps=1, steps=2, batch=2,
                    smoke=True)
        big_kw, small_kw = tiny, tiny
    else:
        big_kw, small_kw = dict(shape=big), dict(shape="llama3-1b")
    tag, small = ("smoke", "smoke") if smoke else (big, "1b")
    return [
        Case(f"{tag}-lora-lmtune", recipe="lmtune", **big_kw),
        Case(f"{tag}-lora-peft-padded", recipe="peft-padded", **big_kw),
        Case(f"{tag}-lora-trl", **big_kw),
        Case(f"{tag}-qlora-lmtune", recipe="lmtune", method="qlora", **big_kw),
        Case(f"{tag}-lora-unsloth", recipe="unsloth", **big_kw),
        Case(f"{tag}-qlora-unsloth", recipe="unsloth", method="qlora", **big_kw),
        Case(f"{tag}-qlora-trl", method="qlora", **big_kw),
        Case(f"{tag}-qlora-peft-padded", recipe="peft-padded", method="qlora", **big_kw),
        Case(f"{tag}-lora-trl-liger", liger=True, **big_kw),
        Case(f"{small}-lora", **small_kw),
        Case(f"{small}-qlora", method="qlora", **small_kw),
        Case(f"{small}-full", method="full", **small_kw),
        Case(f"{tag}-lora-lmtune-b16", recipe="lmtune", **{**big_kw, "batch": 4 if smoke else 16}),
    ]


def skip_reason(c: Case, unsloth_site: str | None) -> str | None:
    if c.liger and c.smoke:
        return "liger kernels need CUDA (Triton); not run in --smoke"
    if c.liger and importlib.util.find_spec("liger_kernel") is None:
        return "liger-kernel is not installed"
    if c.method == "qlora" and importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    if c.recipe == "unsloth" and c.smoke:
        return "Unsloth needs a GPU; not run in --smoke"
    if c.recipe == "unsloth" and not (unsloth_site and (Path(unsloth_site) / "unsloth").is_dir()):
        return "Unsloth is not installed (--unsloth-site: see benchmarks/gpu_wheels.sh)"
    return None


def run_one(c: Case, timeout: float, logs: Path, unsloth_site: str | None = None) -> dict:
    result = Path(c.work) / f"{c.name}.result.json"
    result.parent.mkdir(parents=True, exist_ok=True)
    result.unlink(missing_ok=True)
    code = (f"import sys; sys.path.insert(0, {str(HERE)!r}); import gpu_cases as g; "
            f"sys.exit(g.child_main(sys.argv[1], sys.argv[2]))")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error")
    if c.recipe == "unsloth":   # its own environment first: its trl/datasets versions, then the shared ones
        env["PYTHONPATH"] = os.pathsep.join(x for x in (unsloth_site, env.get("PYTHONPATH")) if x)
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
    return "\n".join(lines) + "\n\n" + "\n".join(targets(rows)) + "\n"


def targets(rows: list[dict]) -> list[str]:
    """The issue's GPU targets, from the 8B rows: lmtune LoRA MFU >= 40% and >= 1.2x HF+PEFT's
    tokens/s; lmtune QLoRA peak VRAM <= 0.45x its LoRA's. Plus every peer's ratio to lmtune."""
    ok = {r["case"]: r for r in rows if "tokens_per_s" in r}
    notes = []
    for name, lm in ok.items():
        if not name.endswith("-lora-lmtune") and not name.endswith("-qlora-lmtune"):
            continue
        stem = name[: -len("-lmtune")]
        for peer in ("peft-padded", "trl", "unsloth"):
            other = ok.get(f"{stem}-{peer}")
            if other:
                mem = lambda r: r.get("peak_alloc_gib", r.get("peak_rss_gib"))  # noqa: E731  (CPU smoke: RSS)
                notes.append(f"{stem}: lmtune / {peer} tokens/s {lm['tokens_per_s'] / other['tokens_per_s']:.2f}x, "
                             f"peak {mem(lm)} vs {mem(other)} GiB")
        if stem.endswith("-lora") and lm.get("mfu") is not None:
            notes.append(f"{stem}: lmtune MFU {100 * lm['mfu']:.1f}% (target >= 40%: "
                         f"{'met' if lm['mfu'] >= 0.40 else 'NOT met'})")
        if stem.endswith("-lora") and ok.get(f"{stem}-peft-padded"):
            x = lm["tokens_per_s"] / ok[f"{stem}-peft-padded"]["tokens_per_s"]
            notes.append(f"{stem}: lmtune >= 1.2x HF+PEFT: {'met' if x >= 1.2 else 'NOT met'} ({x:.2f}x)")
    for recipe in ("lmtune", "trl", "peft-padded", "unsloth"):
        lora = next((r for n, r in ok.items() if n.endswith(f"-lora-{recipe}") and "peak_alloc_gib" in r), None)
        qlora = next((r for n, r in ok.items() if n.endswith(f"-qlora-{recipe}") and "peak_alloc_gib" in r), None)
        if lora and qlora:
            x = qlora["peak_alloc_gib"] / lora["peak_alloc_gib"]
            target = f" (target <= 0.45: {'met' if x <= 0.45 else 'NOT met'})" if recipe == "lmtune" else ""
            notes.append(f"{recipe}: QLoRA / LoRA peak VRAM {x:.2f}x{target}")
    return notes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--big", default="llama3-8b", choices=["llama3-8b", "llama3-3b"], help="shape of the LoRA comparison")
    p.add_argument("--smoke", action="store_true", help="CPU, tiny shapes: checks the code path")
    p.add_argument("--budget-seconds", type=float, default=480, help="skip cases that would start after this")
    p.add_argument("--unsloth-site", default=os.environ.get("UNSLOTH_SITE"),
                   help="folder with Unsloth and its packages (benchmarks/gpu_wheels.sh), first on its cases' path")
    p.add_argument("--steps", type=int, help="timed optimizer steps per case (default 6; smoke 2)")
    p.add_argument("--case-timeout", type=float, default=180)
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
        reason = skip_reason(c, args.unsloth_site) or (
            f"budget: {left:.0f} s left" if left < args.min_case_seconds else None)
        row = {"case": c.name, "skipped": reason} if reason else run_one(c, min(args.case_timeout, left), logs,
                                                                        args.unsloth_site)
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
