"""Do DPO-on-pairs and GRPO lift a weak SFT start on tasks the recipes were not tuned on?

The protocol (issue 28's target: each adds >= 10 points of exact match), for one task:

1. SFT: the task's LoRA recipe (configs/tiny-json-lora.yaml) cut to `--sft-steps` optimizer steps,
   a fraction of an epoch, so exact match stays well below the ceiling (a weak start);
2. pairs: `lmtune pairs SFT` on `--pairs-prompts` prompts of the task's training split (never the
   test split), `--samples` answers each (and, with --greedy/--reference/--cut, as lmtune pairs
   takes them), scored by the task's own metric;
3. DPO on those pairs from the SFT run (configs/tiny-json-dpo.yaml);
4. GRPO from the same SFT run, rl.reward [task, format] (configs/tiny-json-grpo.yaml), on the
   task's training prompts.

Every step is a plain `lmtune` command (printed, and kept in the result), with fixed seeds; the
numbers are read from the runs' eval.json (greedy answers to the test split after training: base =
the SFT run, tuned = the run; the forgetting check on the general-text probe). A step whose output
exists is not run again (rerun with a new --work to start over). One JSON line per protocol is
appended to --out:

    python benchmarks/objectives_unseen.py --task json --work /tmp/unseen-json
    python benchmarks/objectives_unseen.py --task catalogue --work /tmp/unseen-catalogue

Tasks: `json` (the bundled sentence -> JSON task; exact match = the whole object right) and
`catalogue` read from its passage (the catalogue task, each question with its product's passage in
the prompt: the catalogue at training time for the training questions, the current one for the
test questions about changed and new products; exact match = the trained sentence with both facts
right). The catalogue without any passage is no test of this: its test facts changed after
training (exact match 0 by construction) and its validation questions are the training questions.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))   # this checkout's lmtune (its RAG prompt format)
TASKS = ROOT / "src" / "lmtune" / "assets" / "tasks"
# per task: the SFT recipe, overrides that make the task, and the training split the prompts come from
SPECS = {
    "json": {"sft": "configs/tiny-json-lora.yaml", "data": ["data.task=json"], "train": TASKS / "json" / "train.jsonl"},
}
def catalogue_reading(work: Path) -> dict:
    """The catalogue task with its product's passage in every prompt (oracle retrieval, in lmtune's
    RAG prompt format): the training questions with the catalogue at training time (docs_v1), the
    test questions (changed and new products) with the current one (docs_v2); scored by the
    catalogue task's metrics. The task's validation split repeats the training questions, so the
    validation split here is the training questions of every tenth product (held out of training)."""
    from types import SimpleNamespace

    from lmtune.rag.prompt import augment

    def rows(split: str, docs: str) -> list[tuple[str, dict]]:
        by_name = {}
        for line in (TASKS / "catalogue" / f"{docs}.jsonl").read_text().splitlines():
            doc = json.loads(line)
            by_name[doc["text"].split("\n", 1)[0].removeprefix("Product: ")] = SimpleNamespace(**doc)
        out = []
        for line in (TASKS / "catalogue" / f"{split}.jsonl").read_text().splitlines():
            question, answer = (m["content"] for m in json.loads(line)["messages"])
            name = answer.removeprefix("The ").split(" costs ")[0]
            out.append((name, {"messages": [{"role": "user", "content": augment(question, [by_name[name]])},
                                            {"role": "assistant", "content": answer}]}))
        return out

    train = rows("train", "docs_v1")
    held = sorted({name for name, _ in train})[::10]
    splits = {"train": [r for n, r in train if n not in held], "validation": [r for n, r in train if n in held],
              "test": [r for _, r in rows("test", "docs_v2")]}
    files = {}
    for split, records in splits.items():
        files[split] = work / f"catalogue_{split}.jsonl"
        files[split].write_text("".join(json.dumps(r) + "\n" for r in records))
    return {"sft": "configs/tiny-json-lora.yaml", "train": files["train"],
            "data": ["data.task=catalogue", *(f"data.{k}={v}" for k, v in files.items())]}


def lmtune(args: list[str], log: Path) -> float:
    """Run `lmtune ARGS` (this checkout's code), output to `log`; seconds of wall time."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    print("$ lmtune " + " ".join(args), flush=True)
    start = time.perf_counter()
    with log.open("w") as fh:
        done = subprocess.run([sys.executable, "-m", "lmtune", *args], stdout=fh, stderr=subprocess.STDOUT,
                              env=env, cwd=ROOT)
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"lmtune {args[0]} failed (exit {done.returncode}); see {log}")
    print(f"  {seconds:.0f} s", flush=True)
    return seconds


def sample_prompts(train: Path, n: int, seed: int, out: Path) -> None:
    lines = [line for line in train.read_text().splitlines() if line.strip()]
    random.Random(seed).shuffle(lines)
    out.write_text("\n".join(lines[:n]) + "\n")


def scores(run: Path) -> dict:
    """Test-split metrics (base = the run's start, tuned) and the forgetting verdict of a run."""
    ev = json.loads((run / "eval.json").read_text())
    summary = json.loads((run / "train_summary.json").read_text()) if (run / "train_summary.json").is_file() else {}
    forgetting = ev.get("forgetting") or {}
    return {"base": ev["task"]["base"], "tuned": ev["task"]["tuned"], "examples": ev["task"]["examples"],
            "forgetting": forgetting.get("verdict"), "forgetting_ratio": forgetting.get("ratio"),
            "train_seconds": summary.get("train_seconds"), "steps": summary.get("global_step"),
            "eval_seconds": ev.get("seconds")}


def step(name: str, done: Path, args: list[str], work: Path, record: dict) -> None:
    """Run one protocol step unless its output `done` exists; record its command and wall time."""
    record["commands"][name] = "lmtune " + " ".join(args)
    if done.exists():
        print(f"{name}: {done} exists, not run again", flush=True)
        return
    record["wall_seconds"][name] = round(lmtune(args, work / f"{name}.log"), 1)


def pairs_stats(path: Path) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {"pairs": len(rows), "chosen_right": sum(r["score_chosen"] >= 1.0 for r in rows),
            "chosen_from_reference": sum(r.get("chosen_from") == "reference" for r in rows),
            "mean_gap": round(sum(r["score_chosen"] - r["score_rejected"] for r in rows) / max(1, len(rows)), 3)}


def table(path: Path) -> str:
    """The results file as a markdown table: one row per protocol run."""
    names = ("dpo", "grpo", "chosen_sft")
    lines = ["| task | variant | SFT start EM | + DPO-on-pairs EM (points) | + GRPO EM (points) | control: SFT on "
             "the chosen answers | forgetting (dpo, grpo, control) | wall s: pairs, dpo, grpo, control |",
             "|---|---|---|---|---|---|---|---|"]
    for line in path.read_text().splitlines():
        r = json.loads(line)
        cells = [f"{100 * r[n]['tuned']['exact_match']:.1f}% ({r[n]['exact_match_gain_points']:+.1f})"
                 if r.get(n) else "-" for n in names]
        verdicts = ", ".join(f"{r[n]['forgetting']} x{r[n]['forgetting_ratio']:.2f}" if r.get(n) else "-"
                             for n in names)
        walls = ", ".join(str(round(r["wall_seconds"][n])) if n in r["wall_seconds"] else "-"
                          for n in ("pairs", *names))
        lines.append(f"| {r['task']} | {r['tag']} | {100 * r['sft_exact_match']:.1f}% | {' | '.join(cells)} | "
                     f"{verdicts} | {walls} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=[*SPECS, "catalogue"], default="json")
    ap.add_argument("--work", type=Path, help="folder for the runs and logs (reused: resume)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sft-steps", type=int, default=30)
    ap.add_argument("--pairs-prompts", type=int, default=512)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--greedy", action="store_true", help="lmtune pairs --greedy: the SFT run's greedy answer joins the samples")
    ap.add_argument("--reference", action="store_true", help="lmtune pairs --reference: the record's answer joins them")
    ap.add_argument("--cut", action="store_true", help="lmtune pairs --cut: rejected answers end at their first mistake")
    ap.add_argument("--dpo", nargs="*", default=[], help="extra overrides for the DPO run (key=value)")
    ap.add_argument("--grpo", nargs="*", default=[], help="extra overrides for the GRPO run (key=value)")
    ap.add_argument("--skip", default="", help="comma-separated steps not to run: dpo, grpo; pairs: stop after the SFT run's evaluation")
    ap.add_argument("--control", action="store_true",
                    help="also SFT on the pairs' chosen answers alone (DPO's lr, epochs, batch): the answer loss "
                         "without the preference term")
    ap.add_argument("--tag", default="", help="name of this variant in the results")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "objectives_unseen.jsonl")
    ap.add_argument("--table", action="store_true", help="print --out as a markdown table and stop")
    args = ap.parse_args(argv)
    if args.table:
        print(table(args.out))
        return
    if args.work is None:
        ap.error("--work is required (a folder for the runs)")
    work, seed = args.work.resolve(), args.seed
    work.mkdir(parents=True, exist_ok=True)
    spec = SPECS[args.task] if args.task in SPECS else catalogue_reading(work)
    skip = set(filter(None, args.skip.split(",")))
    record = {"task": args.task, "tag": args.tag, "seed": seed, "commands": {}, "wall_seconds": {},
              "load_before": os.getloadavg()[0], "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    sft, pairs = work / "sft", work / "pairs.jsonl"
    step("sft", sft / "adapter", ["train", spec["sft"], *spec["data"], f"train.max_steps={args.sft_steps}",
                                  f"train.seed={seed}", "eval.after_train=false", "output.report=false",
                                  f"output.dir={sft}"], work, record)
    step("sft_eval", sft / "eval.json", ["eval", str(sft), "--no-forgetting"], work, record)
    if "pairs" in skip:   # the SFT start alone: is it weak enough (and not at 0)?
        print(json.dumps(json.loads((sft / "eval.json").read_text())["task"]["tuned"]))
        return
    prompts = work / "pairs_prompts.jsonl"
    if not prompts.exists():
        sample_prompts(spec["train"], args.pairs_prompts, seed, prompts)
    step("pairs", pairs, ["pairs", str(sft), "--data", str(prompts), "--samples", str(args.samples), "--out",
                          str(pairs), "--max-new-tokens", "96", "--batch-size", "32", "--seed", str(seed),
                          *(["--greedy"] if args.greedy else []), *(["--reference"] if args.reference else []),
                          *(["--cut"] if args.cut else [])],
         work, record)
    # a preference run's data.validation must be pairs: the SFT validation file stays with SFT
    task_data = [o for o in spec["data"] if not o.startswith("data.validation=")]
    start = [f"model.name_or_path={sft}", *task_data, f"train.seed={seed}", "output.report=false"]
    if "dpo" not in skip:
        step("dpo", work / "dpo" / "eval.json", ["train", "configs/tiny-json-dpo.yaml", *start,
                                                  f"data.train={pairs}", *args.dpo, f"output.dir={work / 'dpo'}"],
             work, record)
    if "grpo" not in skip:
        step("grpo", work / "grpo" / "eval.json", ["train", "configs/tiny-json-grpo.yaml", *start, *args.grpo,
                                                    f"output.dir={work / 'grpo'}"], work, record)
    if args.control:   # the chosen answers alone, as SFT with DPO's lr, epochs and batch: what the answer loss does
        chosen = work / "chosen_sft.jsonl"
        chosen.write_text("".join(json.dumps({"messages": r["prompt"] + [{"role": "assistant", "content": r["chosen"]}]})
                                  + "\n" for r in map(json.loads, pairs.read_text().splitlines())))
        step("chosen_sft", work / "chosen_sft" / "eval.json",
             ["train", "configs/tiny-json-dpo.yaml", *start, "train.objective=sft", f"data.train={chosen}",
              "data.packing=false", f"output.dir={work / 'chosen_sft'}"], work, record)
    sft_eval = json.loads((sft / "eval.json").read_text())["task"]
    sft_summary = json.loads((sft / "train_summary.json").read_text())
    record.update({"sft_steps": args.sft_steps, "sft_epochs": sft_summary["epochs"],
                   "sft_train_seconds": sft_summary["train_seconds"], "sft_exact_match": sft_eval["tuned"]["exact_match"],
                   "sft_metrics": sft_eval["tuned"], "pairs": pairs_stats(pairs)})
    for name in ("dpo", "grpo", "chosen_sft"):
        if name not in skip and (work / name / "eval.json").is_file():
            got = scores(work / name)
            got["exact_match_gain_points"] = round(100 * (got["tuned"]["exact_match"] - got["base"]["exact_match"]), 1)
            record[name] = got
    record["load_after"] = os.getloadavg()[0]
    print(json.dumps({k: v for k, v in record.items() if k != "commands"}, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as fh:
        fh.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
