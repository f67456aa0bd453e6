"""Do the auto defaults (train.learning_rate: auto, train.epochs: auto) train well on data nobody
tuned them for? Six tasks of our own (benchmarks/auto_tasks.py) on the embedded base: the auto
defaults against a small grid of learning rate x epochs, LoRA and full. Each point is one
`lmtune train` process with the task's train.jsonl, scored on its test.jsonl (never trained on) by
train's own after-train evaluation: exact match base vs tuned, and the forgetting check.

    python benchmarks/auto_hparams.py --out build/auto-study                  # everything (hours on CPU)
    python benchmarks/auto_hparams.py --out build/auto-study --tasks record,reverse --methods lora
    python benchmarks/auto_hparams.py --out build/auto-study --table          # the table in docs/hparams.md
    python benchmarks/auto_hparams.py --out build/auto-study --tasks glossary --methods full --probe 2e-4:10

Results go to OUT/results.jsonl, one line per point; a point already there is skipped, so the
study can be stopped and continued. Target: on every task, auto reaches at least 90% of the best
grid point's exact match, with no worse forgetting verdict.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from auto_tasks import TASKS, write as write_tasks  # noqa: E402

GRID_LR = {"lora": (1e-3, 5e-3), "full": (1e-4, 5e-4), "qlora": (1e-3, 5e-3)}
GRID_EPOCHS = (3, 10)
GRID_ORDER = ((0, 0), (1, 0), (0, 1), (1, 1))   # (lr index, epochs index): the cheap points first
# written into each auto row: which version of lmtune/train/hparams.py's rule chose its values
RULE = ("v6: lora 2e-4 x (1 + (f - 1) x s), f = (4096/hidden)^0.58; full 2e-5 x (1 + (g - 1) x s), "
        "g = (4096/hidden)^0.83; s = 1 up to 700 optimizer steps, then sqrt(700/steps); epochs: the seed's "
        "by example count, then at least 80 x f optimizer steps (400 at hidden 256), up to 10 x sqrt(f) epochs (22 at hidden 256)")
RULE_VERSION = RULE.split(":")[0]
VERDICT_RANK = {"ok": 0, "warning": 1, "forgotten": 2, None: 0}
# Shared by every point: short answers, 60 test prompts, examples of < 100 tokens packed in rows of
# 128 (a quarter of the default: a quarter of the tokens per optimizer step, so the study fits a
# shared CPU; the rule counts optimizer steps, so it applies as at the default).
COMMON = ["eval.max_new_tokens=24", "eval.num_samples=60", "data.max_length=128",
          "output.report=false", "output.overwrite=true"]


def points(methods: list[str]) -> list[tuple[str, str, str]]:
    """(method, lr, epochs) with 'auto' for the defaults; auto first."""
    out = []
    for m in methods:
        out.append((m, "auto", "auto"))
        out += [(m, f"{GRID_LR[m][i]:g}", str(GRID_EPOCHS[j])) for i, j in GRID_ORDER]
    return out


def run_point(task_dir: Path, run_dir: Path, method: str, lr: str, epochs: str) -> dict:
    cmd = [sys.executable, "-m", "lmtune", "train", "--data", str(task_dir / "train.jsonl"),
           f"data.test={task_dir / 'test.jsonl'}", f"method={method}", f"train.learning_rate={lr}",
           f"train.epochs={epochs}", f"output.dir={run_dir}", *COMMON]
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.time() - started
    (run_dir.parent / f"{run_dir.name}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout)[-2000:], "wall_s": round(wall, 1)}
    ev = json.loads((run_dir / "eval.json").read_text())
    summary = json.loads((run_dir / "train_summary.json").read_text())
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    task = ev.get("task") or {}
    forget = ev.get("forgetting") or {}
    return {"lr": cfg["train"]["learning_rate"], "epochs": cfg["train"]["epochs"],
            "steps": summary["global_step"], "exact_match": task.get("tuned", {}).get("exact_match"),
            "rouge_l": task.get("tuned", {}).get("rouge_l"),
            "base_exact_match": (task.get("base") or {}).get("exact_match"),
            "forgetting": forget.get("verdict"), "forgetting_ratio": forget.get("ratio"),
            "train_s": summary["train_seconds"], "wall_s": round(wall, 1)}


def study(args) -> None:
    out = Path(args.out)
    tasks_dir = out / "tasks"
    if not tasks_dir.is_dir():
        write_tasks(tasks_dir)
    results = out / "results.jsonl"
    # point by point across the tasks (auto everywhere first): a study cut short still covers them all
    chosen = [p for i, p in enumerate(points(args.methods)) if args.points is None or i in args.points]
    for method, lr, epochs in chosen:
        for task in args.tasks:
            point = "auto" if lr == "auto" else f"lr={lr} ep={epochs}"
            name = f"auto-{RULE_VERSION}" if lr == "auto" else point.replace(' ', '-').replace('=', '')
            run_dir = out / "runs" / task / f"{method}-{name}"
            done = {_key(r) for r in _read(results)}
            if (task, method, point, RULE_VERSION if lr == "auto" else None) in done or run_dir.is_dir():
                continue   # done (an auto point: by this version of the rule), or another process runs it
            row = {"task": task, "method": method, "point": point,
                   **run_point(tasks_dir / task, run_dir, method, lr, epochs)}
            if lr == "auto":
                row["rule"] = RULE
            print(json.dumps(row), flush=True)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")


def probe(args) -> None:
    """Off-grid points (--probe LR:EPOCHS) on each task and method; rows go to OUT/probes.jsonl."""
    out = Path(args.out)
    lr, epochs = args.probe.split(":")
    for method in args.methods:
        for task in args.tasks:
            run_dir = out / "probes" / task / f"{method}-lr{lr}-ep{epochs}"
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            row = {"task": task, "method": method, "point": f"lr={lr} ep={epochs}", "probe": True,
                   **run_point(out / "tasks" / task, run_dir, method, lr, epochs)}
            print(json.dumps(row), flush=True)
            with (out / "probes.jsonl").open("a") as f:
                f.write(json.dumps(row) + "\n")


def _key(r: dict) -> tuple:
    """A point's identity; auto points are told apart by the rule version that chose their values."""
    return r["task"], r["method"], r["point"], _version(r) if r["point"] == "auto" else None


def _version(r: dict) -> str | None:
    return r["rule"].split(":")[0] if r.get("rule") else None


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def _cell(r: dict) -> str:
    """`100% x1.11`: exact match and the forgetting ratio (probe perplexity after / before)."""
    ratio = f" x{r['forgetting_ratio']:.2f}" if r.get("forgetting_ratio") else ""
    return f"{100 * r['exact_match']:.0f}%{ratio}"


def target(auto: dict | None, best: dict | None) -> str:
    """met: auto's exact match >= 90% of the best grid point's and its forgetting verdict no worse."""
    if auto and auto["exact_match"] == 1.0 and VERDICT_RANK[auto["forgetting"]] == 0:
        return "met (100%, ok: no point can beat it)" if not best else "met"
    if not auto or not best:
        return "-"
    em = auto["exact_match"] >= 0.9 * best["exact_match"]
    verdict = VERDICT_RANK[auto["forgetting"]] <= VERDICT_RANK[best["forgetting"]]
    return "met" if em and verdict else "not met: " + " and ".join(
        x for x, bad in (("exact match", not em), ("forgetting", not verdict)) if bad)


def table(args) -> str:
    """One row per task and method: auto vs the best grid point (exact match, then forgetting)."""
    rows = [r for r in _read(Path(args.out) / "results.jsonl") if "error" not in r
            and (r["point"] != "auto" or _version(r) in args.rules)]
    lines = ["| task (train file) | method | auto: lr x epochs (steps) | auto EM, forgetting | best grid point "
             "| auto / best EM | verdict auto / best | every grid point (lr x epochs: EM, forgetting) "
             "| target | wall s, all points |",
             "|---|---|---|---|---|---:|---|---|---|---:|"]
    for task in TASKS:
        for method in ("lora", "full", "qlora"):
            mine = [r for r in rows if r["task"] == task and r["method"] == method]
            # the newest rule version listed first in --rules wins (an older row stands in only where
            # the newer rule resolves to the same values and was not re-run)
            autos = sorted((r for r in mine if r["point"] == "auto"), key=lambda r: args.rules.index(_version(r)))
            auto = autos[0] if autos else None
            grid = [r for r in mine if r["point"] != "auto"]
            if not mine:
                continue
            best = max(grid, key=lambda r: (r["exact_match"], -VERDICT_RANK[r["forgetting"]]), default=None)
            ratio = (f"{auto['exact_match'] / best['exact_match']:.2f}" if auto and best and best["exact_match"]
                     else "-")
            pts = ", ".join(f"{r['point'].replace('lr=', '').replace(' ep=', ' x ')}: {_cell(r)}" for r in grid)
            auto_cols = (f"{auto['lr']:.1e} x {auto['epochs']:g} ({auto['steps']}) | {_cell(auto)} | " if auto
                         else "not run | - | ")
            best_col = f"{best['point'].replace('lr=', '').replace(' ep=', ' x ')}: {_cell(best)}" if best else "not run"
            verdicts = f"{(auto or {}).get('forgetting', '-')} / {(best or {}).get('forgetting', '-')}"
            lines.append(f"| {task} ({TASKS[task][1]}) | {method} | {auto_cols}{best_col} | {ratio} | {verdicts} | "
                         f"{pts or '-'} | {target(auto, best)} | {sum(r['wall_s'] for r in grid + autos[:1]):.0f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/auto-study")
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    ap.add_argument("--methods", default="lora,full")
    ap.add_argument("--points", default=None, help="comma-separated indices into the point list of each "
                    "method (0: auto, 1-4: the grid, cheap first); e.g. 2 runs one grid point on every task "
                    "(a second process can run other points side by side)")
    ap.add_argument("--table", action="store_true", help="print the markdown table of OUT/results.jsonl")
    ap.add_argument("--probe", metavar="LR:EPOCHS", help="run one off-grid point on --tasks x --methods "
                    "(rows to OUT/probes.jsonl, not counted in the table), e.g. 2e-4:10")
    ap.add_argument("--rules", default=RULE_VERSION, help="with --table: the rule versions whose auto rows "
                    "count, comma-separated, e.g. v3,v2 where a later version gives the same values")
    args = ap.parse_args()
    args.points = None if args.points is None else {int(i) for i in args.points.split(",")}
    args.tasks, args.methods, args.rules = args.tasks.split(","), args.methods.split(","), args.rules.split(",")
    if args.table:
        print(table(args))
    elif args.probe:
        probe(args)
    else:
        study(args)


if __name__ == "__main__":
    main()
