"""Kill -9 `lmtune merge` and `lmtune eval` at random moments and check that what they leave never
looks complete unless it is: the companion of scripts/kill_resume.py (same launchers).

    python scripts/kill_outputs.py --kills 6                  # ~1 min on 2 busy cores
    python scripts/kill_outputs.py --kills 3 --launcher fork  # what CI runs (tests/cli/test_reliability_kill_outputs.py)

A short LoRA run is trained once, then merged and evaluated once each without a kill (the
reference). Each killed launch is then checked:
  * merge --out: absent, or whole: lmtune's marker, config.json, README.md, tokenizer, and a
    model.safetensors byte-identical to the reference merge (the merge is deterministic);
  * eval: two reference evaluations that differ (--max-new-tokens 2 and 8); the killed launches
    run the short one over a run holding the long one; RUN/eval.json must then be absent, or the
    whole of one of them: its settings, scores and eval_predictions.jsonl together, never one's
    eval.json beside the other's predictions;
and after all kills one more launch of each must succeed. Half the merge kills wait until the
first file next to --out changes, half the eval kills the moment the first file in the run changes
(the write phases, a few ms in); the rest land at a random moment up to 1.2x the reference's duration. Prints one JSON object; exit 0 when "ok".
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kill_resume  # noqa: E402  (the launchers and the tiny-model builder)

EXTRA_PRELOAD = ["lmtune.merge", "lmtune.inference_loading", "lmtune.generate", "lmtune.evaluate", "lmtune.commands.merge",
                 "lmtune.commands.eval", "safetensors.torch"]


def _timed(launcher, argv: list[str], log: Path) -> tuple[int, float]:
    started = time.time()
    rc = launcher.start(argv, log).wait()
    return rc, time.time() - started


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def merged_state(out: Path, reference: Path) -> str:
    """'absent', 'complete' (equal to the reference) or what is wrong with it."""
    from lmtune.run.layout import is_lmtune_output

    if not out.exists():
        return "absent"
    missing = [n for n in ("config.json", "model.safetensors", "README.md", "tokenizer.json")
               if not (out / n).is_file()]
    if missing or not is_lmtune_output(out):
        return f"incomplete: missing {missing or 'marker'}"
    if _sha(out / "model.safetensors") != _sha(reference / "model.safetensors"):
        return "model.safetensors differs from the reference merge"
    return "complete"


def eval_record(run: Path) -> tuple | None:
    """What an evaluation left in RUN, less its timestamps: (settings, task, validation, predictions hash)."""
    from lmtune.evaluate import PREDICTIONS_FILE

    if not (run / "eval.json").is_file():
        return None
    try:
        result = json.loads((run / "eval.json").read_text())
    except ValueError:
        return ("invalid JSON",)
    preds = run / PREDICTIONS_FILE
    return (json.dumps(result.get("settings"), sort_keys=True), json.dumps(result.get("task"), sort_keys=True),
            json.dumps(result.get("validation"), sort_keys=True), _sha(preds) if preds.is_file() else None)


def eval_state(run: Path, references: dict[str, tuple]) -> str:
    """'absent', the name of the reference evaluation RUN holds whole, or 'mixed' (an eval.json
    beside predictions of another evaluation: what a kill between the two writes used to leave)."""
    record = eval_record(run)
    if record is None:
        return "absent"
    return next((name for name, ref in references.items() if ref == record), "mixed or corrupt")


def _listing(directory: Path) -> dict[str, tuple[int, int]]:
    """name -> (inode, mtime_ns) of the files directly in `directory`: any write changes it."""
    out = {}
    for p in directory.iterdir() if directory.is_dir() else []:
        try:
            st = p.stat()
        except OSError:
            continue
        out[p.name] = (st.st_ino, st.st_mtime_ns)
    return out


def _kill_at(launcher, argv, log: Path, rng: random.Random, duration: float, changed=None) -> bool:
    """Start, kill at the random moment: right after `changed()` turns true when given (a few ms
    later), else anywhere in 0..1.2x `duration`. True if the kill landed before the process ended."""
    proc = launcher.start(argv, log)
    deadline = time.time() + kill_resume.LAUNCH_TIMEOUT
    if changed is not None:
        while proc.poll() is None and not changed() and time.time() < deadline:
            time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.005))
    else:
        time.sleep(rng.uniform(0.0, 1.2 * duration))
    landed = proc.poll() is None
    if landed:
        proc.kill()
    proc.wait()
    return landed


def kill_outputs(kills: int, seed: int, work: Path, launcher_kind: str) -> dict:
    started = time.time()
    from lmtune.console import configure

    configure()  # the forkserver inherits the quiet environment
    kill_resume.PRELOAD[:] = list(dict.fromkeys(kill_resume.PRELOAD + EXTRA_PRELOAD))
    launcher = kill_resume.Launcher(launcher_kind)
    data, test = work / "train.jsonl", work / "test.jsonl"
    launcher.build(work / "base", data)
    test.write_text("".join(data.read_text().splitlines(keepends=True)[:6]))
    cfg = kill_resume.write_config(work, str(work / "base"), data, max_steps=4, save_steps=4)
    run, problems = work / "run", []
    if launcher.start(["train", str(cfg), f"output.dir={run}"], work / "train.log").wait() != 0:
        return {"ok": False, "problems": [f"training failed; see {work / 'train.log'}"]}
    reference_merge = work / "reference-merged"
    rc_m, merge_s = _timed(launcher, ["merge", str(run), "--out", str(reference_merge)], work / "merge-ref.log")
    # Two evaluations that differ (answer length): the killed launches run "short" over a run
    # holding "long", so an eval.json of one beside predictions of the other is caught.
    evals = {name: ["eval", str(run), "--test", str(test), "--no-forgetting", "--max-new-tokens", n]
             for name, n in (("short", "2"), ("long", "8"))}
    references = {}
    for name in ("short", "long"):
        rc_e, eval_s = _timed(launcher, evals[name], work / f"eval-{name}.log")
        if rc_m or rc_e:
            return {"ok": False, "problems": [f"reference merge/eval exited {rc_m}/{rc_e}; see {work}"]}
        references[name] = eval_record(run)

    rng, out = random.Random(seed), work / "merged"
    states = {"merge": [], "eval": []}
    for i in range(kills):
        before = _listing(work)   # the merge writes next to --out (staging) and then --out itself
        landed = _kill_at(launcher, ["merge", str(run), "--out", str(out), "--overwrite"], work / f"merge-{i}.log",
                          rng, merge_s, (lambda b=before: _listing(work) != b) if i % 2 == 0 else None)
        states["merge"].append((landed, merged_state(out, reference_merge)))
        if eval_record(run) is None:  # the previous kill left no eval.json: put the long one back
            launcher.start(evals["long"], work / f"eval-long-{i}.log").wait()
        # even kills: the moment the first file in the run changes (the write phase); odd: anywhere
        before = _listing(run)
        landed = _kill_at(launcher, evals["short"], work / f"eval-{i}.log", rng, eval_s,
                          (lambda b=before: _listing(run) != b) if i % 2 == 0 else None)
        states["eval"].append((landed, eval_state(run, references)))
    for i, (_, state) in enumerate(states["merge"]):
        if state not in ("absent", "complete"):
            problems.append(f"merge kill {i}: {state}")
    for i, (_, state) in enumerate(states["eval"]):
        if state not in ("absent", "short", "long"):
            problems.append(f"eval kill {i}: {state}")
    if launcher.start(["merge", str(run), "--out", str(out), "--overwrite"], work / "merge-final.log").wait() != 0:
        problems.append(f"the merge after the kills failed; see {work / 'merge-final.log'}")
    elif merged_state(out, reference_merge) != "complete":
        problems.append(f"the merge after the kills: {merged_state(out, reference_merge)}")
    if launcher.start(evals["short"], work / "eval-final.log").wait() != 0 or eval_state(run, references) != "short":
        problems.append(f"the eval after the kills did not leave a whole eval.json; see {work / 'eval-final.log'}")
    landed = {k: sum(1 for hit, _ in rows if hit) for k, rows in states.items()}
    return {"kills_requested": kills, "kills_landed": landed, "seed": seed, "launcher": launcher_kind,
            "merge_seconds": round(merge_s, 2), "eval_seconds": round(eval_s, 2),
            "states": {k: [s for _, s in rows] for k, rows in states.items()},
            "problems": problems, "ok": not problems, "seconds": round(time.time() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=6, help="SIGKILLs of merge and of eval each")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--launcher", choices=("exec", "fork"), default="exec")
    parser.add_argument("--workdir", type=Path, help="keep runs and logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lmtune-kill-outputs-"))
    work.mkdir(parents=True, exist_ok=True)
    result = kill_outputs(args.kills, args.seed, work, args.launcher)
    result["workdir"] = str(work)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
