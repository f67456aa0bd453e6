"""One-GPU FSDP smoke run: does `lmtune train CONFIG --nproc 1 distributed.backend=fsdp` train, shard
(FSDP2 DTensor parameters), save weights loadable without lmtune, and follow the loss curve of the
plain one-process run? Run on a CUDA machine; CPU refuses FSDP by design.

    python benchmarks/gpu_fsdp_smoke.py --out DIR [--steps 30]

Runs, each a fresh `lmtune train` on the embedded base and the bundled SQL task (bf16 on bf16 GPUs):
    single      one process, no engine (the reference)
    fsdp-lora   torchrun, 1 process, FSDP2, LoRA
    fsdp-full   torchrun, 1 process, FSDP2, full fine-tuning
Writes DIR/results.json and one log per run. Several GPUs/machines are not covered (see
docs/distributed.md for those commands).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "src" / "lmtune" / "assets" / "base" / "tiny"
RUNS = {
    "single": ["method=lora"],
    "fsdp-lora": ["method=lora", "distributed.backend=fsdp", "--nproc", "1"],
    "fsdp-full": ["method=full", "train.learning_rate=1e-4", "distributed.backend=fsdp", "--nproc", "1"],
}


def run(name: str, extra: list[str], work: Path, out: Path, steps: int) -> dict:
    run_dir = work / name
    dump = work / f"{name}-dump"
    flags = [a for a in extra if a.startswith("--") or a.isdigit()]
    overrides = [a for a in extra if a not in flags]
    # `lmtune train`, each rank dumping its tensors and whether they are sharded (tests/helpers/rank_dump.py)
    cmd = [sys.executable, str(REPO / "tests" / "helpers" / "rank_dump.py"), str(dump), "train",
           str(REPO / "benchmarks" / "ddp_scaling.yaml"),
           f"model.name_or_path={BASE}", f"output.dir={run_dir}", f"train.max_steps={steps}",
           "train.batch_size=4", "train.grad_accum=1", *overrides, *flags]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    started = time.time()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    (out / f"{name}.log").write_text(" ".join(cmd) + "\n\n" + done.stdout + "\n--- stderr ---\n" + done.stderr)
    row = {"run": name, "rc": done.returncode, "wall_s": round(time.time() - started, 1)}
    if done.returncode != 0:
        return row
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    summary = json.loads((run_dir / "train_summary.json").read_text())
    rank0 = dump / "rank0.json"
    row.update(losses=losses, train_runtime=next(m["train_runtime"] for m in metrics if "train_runtime" in m),
               peak_memory_mb=summary.get("peak_memory_mb"), eval_loss=summary.get("eval_loss"),
               rank0=json.loads(rank0.read_text()) if rank0.is_file() else None,
               files=sorted(p.name for p in (run_dir / ("model" if "full" in name else "adapter")).iterdir()))
    row["reload"] = reload_check(run_dir, full="full" in name)
    return row


def reload_check(run_dir: Path, full: bool) -> dict:
    """Load the saved weights with plain transformers/peft (no lmtune) and run one forward pass."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(BASE))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ids = tok("SELECT name FROM customers", return_tensors="pt").input_ids.to(device)
    base = AutoModelForCausalLM.from_pretrained(str(BASE), dtype=torch.float32).to(device)
    with torch.no_grad():
        ref = base(input_ids=ids).logits
    if full:
        model = AutoModelForCausalLM.from_pretrained(str(run_dir / "model"), dtype=torch.float32).to(device)
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, str(run_dir / "adapter"))
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    return {"finite": bool(torch.isfinite(logits).all()), "max_abs_diff_vs_base": float((logits - ref).abs().max())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/lmtune-gpu-smoke"))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--only", help="comma-separated run names (default: all)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    results = {"gpu": gpu, "torch": torch.__version__, "runs": []}
    for name, extra in RUNS.items():
        if args.only and name not in args.only.split(","):
            continue
        row = run(name, extra, args.work, args.out, args.steps)
        print(json.dumps({k: v for k, v in row.items() if k != "losses"}), flush=True)
        results["runs"].append(row)
    by = {r["run"]: r for r in results["runs"]}
    if by.get("single", {}).get("losses") and by.get("fsdp-lora", {}).get("losses"):
        a, b = by["single"]["losses"], by["fsdp-lora"]["losses"]
        results["lora_loss_max_rel_diff_single_vs_fsdp"] = max(abs(x - y) / abs(x) for x, y in zip(a, b))
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "runs"}))


if __name__ == "__main__":
    main()
