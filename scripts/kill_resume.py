"""Kill -9 a LoRA run at random moments, resume it each time, and compare the end with a run that
was never interrupted (same config, same seed).

    python scripts/kill_resume.py --kills 10                 # the benchmark (~8 min on 2 busy cores)
    python scripts/kill_resume.py --kills 2 --launcher fork  # what CI runs (tests/train/test_resume.py)

What it checks, printed as one JSON object (exit 0 when "ok" is true):
  * the final adapter equals the uninterrupted one (max |weight difference| <= --tol) and so do the
    final train loss and the loss of every logged step (metrics.jsonl, rewritten on resume);
  * every resume used a checkpoint that was complete (marker present and every file it lists
    intact) in a snapshot taken just before that resume, and each checkpoint it called partial
    was incomplete in that snapshot: a half-written checkpoint is never used;
  * no incomplete checkpoint is left at the end.

When to kill: each launch gets a target step drawn from a seeded RNG (spread so that the kills share
the remaining steps) plus a random fraction of a step, so kills land inside optimizer steps,
checkpoint writes, checkpoint rotation and the final adapter save. The kill waits for the run to
log a fresh step first (a kill during Python's imports would test nothing).

Launchers: `exec` starts `python -m lmtune train ...` per launch (the real thing; ~10 s of imports
each); `fork` forks each launch from a server that imported torch/transformers/peft/trl once
(multiprocessing's forkserver). Both are separate processes killed with SIGKILL; `fork` only saves
the import time, which is what lets CI afford it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT / "src", ROOT / "tests" / "helpers", Path(__file__).resolve().parent):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))  # the tiny-model builder lives with the tests

ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
       "TOKENIZERS_PARALLELISM": "false", "TRANSFORMERS_VERBOSITY": "error", "PYTHONUNBUFFERED": "1"}
LAUNCH_TIMEOUT = 600  # seconds; a launch that takes longer is killed and reported
PRELOAD = ["lmtune.cli", "lmtune.commands.train", "lmtune.train.recipe", "lmtune.train.callbacks", "lmtune.models",
           "lmtune.train.methods.lora", "lmtune.data", "lmtune.run.envinfo", "torch", "transformers.trainer", "peft",
           "trl.trainer.sft_trainer", "datasets", "tiny_models", "kill_resume"]


# ---------------------------------------------------------------- launching

def _child(argv: list[str], log: str) -> None:
    """Forked launch: `lmtune <argv>` with stdout/stderr line-buffered into `log`."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    from lmtune.cli import main

    sys.exit(main(argv))


def _build_child(model_dir: str, data: str) -> None:
    from tiny_models import save_tiny_model, write_alpaca

    save_tiny_model(Path(model_dir), "llama")
    write_alpaca(Path(data), 40)


class Launcher:
    """Starts `lmtune train` in a separate process that can be SIGKILLed."""

    def __init__(self, kind: str):
        self.kind = kind
        os.environ.update(ENV)
        if kind == "fork":
            import multiprocessing as mp

            here = str(Path(__file__).resolve().parent)
            if here not in sys.path:  # the forkserver imports this module by name from sys.path
                sys.path.insert(0, here)
            import kill_resume

            self.mod = kill_resume
            self.ctx = mp.get_context("forkserver")
            self.ctx.set_forkserver_preload(PRELOAD)

    def build(self, model_dir: Path, data: Path) -> None:
        if self.kind == "fork":
            p = self.ctx.Process(target=self.mod._build_child, args=(str(model_dir), str(data)))
            p.start()
            p.join()
            ok = p.exitcode == 0
        else:
            code = "import sys; from kill_resume import _build_child; _build_child(sys.argv[1], sys.argv[2])"
            ok = subprocess.run([sys.executable, "-c", code, str(model_dir), str(data)],
                                cwd=Path(__file__).parent, env={**os.environ, **ENV}).returncode == 0
        if not ok:
            raise SystemExit("building the tiny model failed")

    def start(self, argv: list[str], log: Path) -> "Proc":
        if self.kind == "fork":
            p = self.ctx.Process(target=self.mod._child, args=(argv, str(log)))
            p.start()
            return Proc(p, None)
        with open(log, "ab") as fh:
            popen = subprocess.Popen([sys.executable, "-m", "lmtune", *argv], stdout=fh, stderr=subprocess.STDOUT,
                                     start_new_session=True, env={**os.environ, **ENV})
        return Proc(None, popen)


@dataclass
class Proc:
    mp: object
    popen: subprocess.Popen | None

    def poll(self) -> int | None:
        if self.popen is not None:
            return self.popen.poll()
        return self.mp.exitcode

    def kill(self) -> None:
        if self.popen is not None:
            os.killpg(self.popen.pid, signal.SIGKILL)  # the whole group: no child survives
        else:
            self.mp.kill()

    def wait(self) -> int:
        if self.popen is not None:
            return self.popen.wait()
        self.mp.join()
        return self.mp.exitcode


# ---------------------------------------------------------------- the run and what is on disk

def write_config(work: Path, model: str, data: Path, max_steps: int, save_steps: int) -> Path:
    import yaml

    cfg = {"model": {"name_or_path": model},
           "data": {"train": [str(data)], "val_split": 0.0, "max_length": 96, "template": "alpaca"},
           "method": "lora",
           "train": {"max_steps": max_steps, "batch_size": 2, "grad_accum": 1, "learning_rate": 5e-3,
                     "warmup_ratio": 0.1, "logging_steps": 1, "save_steps": save_steps, "save_total_limit": 2,
                     "load_best": False, "seed": 7, "threads": 1},
           "eval": {"after_train": False, "forgetting_check": False},
           "output": {"report": False}}
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def checkpoint_snapshot(run: Path) -> dict[int, bool]:
    """step -> complete? for every checkpoint directory on disk right now."""
    from lmtune.run.layout import checkpoint_is_complete

    out = {}
    for p in (run / "checkpoints").glob("checkpoint-*"):
        tail = p.name.rsplit("-", 1)[-1]
        if p.is_dir() and tail.isdigit():
            out[int(tail)] = checkpoint_is_complete(p)
    return out


def logged_steps(run: Path) -> tuple[int | None, int]:
    """(inode, highest step) of metrics.jsonl; the inode changes when a resume rewrites the file."""
    path = run / "metrics.jsonl"
    try:
        ino, text = path.stat().st_ino, path.read_text()
    except OSError:
        return None, 0
    steps = [0]
    for line in text.splitlines():
        try:
            steps.append(int(json.loads(line).get("step", 0)))
        except ValueError:
            pass  # a line being appended right now
    return ino, max(steps)


def adapter_and_losses(run: Path) -> tuple[dict, float | None, dict[int, float]]:
    from safetensors.numpy import load_file

    weights = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    summary = json.loads((run / "train_summary.json").read_text())
    losses = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "loss" in row:
            losses[row["step"]] = row["loss"]
    return weights, summary.get("final_train_loss"), losses


# ---------------------------------------------------------------- one launch

@dataclass
class Launch:
    index: int
    resume: bool
    expected_checkpoint: int | None = None   # the newest complete checkpoint before the launch
    target_step: int | None = None
    killed: bool = False
    killed_after_step: int | None = None
    resumed_from: int | None = None          # from the run's own log
    partial_ignored: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _read_log(log: Path, launch: Launch, snapshot: dict[int, bool]) -> None:
    """Check what the resumed process said it used against the snapshot taken before it started."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("resuming from checkpoint-"):
            launch.resumed_from = int(line.rsplit("-", 1)[-1])
            if not snapshot.get(launch.resumed_from, False):
                launch.problems.append(f"resumed from checkpoint-{launch.resumed_from}, which was not complete")
            if launch.resumed_from != launch.expected_checkpoint:
                launch.problems.append(f"resumed from checkpoint-{launch.resumed_from}, expected the newest "
                                       f"complete one ({launch.expected_checkpoint})")
        elif line.startswith("ignored partial checkpoints: "):
            names = line.split(": ", 1)[1].split(", ")
            launch.partial_ignored = [int(n.rsplit("-", 1)[-1]) for n in names]
            wrong = [s for s in launch.partial_ignored if snapshot.get(s, False)]
            if wrong:
                launch.problems.append(f"complete checkpoints called partial: {wrong}")
        elif line.startswith("no complete checkpoint") and launch.expected_checkpoint is not None:
            launch.problems.append(f"started from step 0 though checkpoint-{launch.expected_checkpoint} was complete")


def run_once(launcher: Launcher, argv: list[str], run: Path, log: Path, launch: Launch,
             rng: random.Random | None, max_steps: int, kills_left: int) -> int | None:
    """Start one launch; kill it at its random moment (rng given) or let it finish. Returns the exit
    code, or None when it was killed."""
    snapshot = checkpoint_snapshot(run) if launch.resume else {}
    complete = [s for s, ok in snapshot.items() if ok]
    launch.expected_checkpoint = max(complete) if complete else None
    start_step = launch.expected_checkpoint or 0
    old_inode, _ = logged_steps(run)
    proc = launcher.start(argv + (["--resume"] if launch.resume else []), log)
    if rng is not None:
        span = max(1, 2 * (max_steps - start_step) // (kills_left + 1))
        launch.target_step = min(max_steps, start_step + rng.randint(1, span))
        fraction = rng.uniform(0.0, 1.5)  # of a step, measured on this launch's own log rows
        seen, times = 0, []
        deadline = time.time() + LAUNCH_TIMEOUT
        while proc.poll() is None and time.time() < deadline:
            inode, step = logged_steps(run)
            fresh = inode is not None and inode != old_inode
            if fresh and step > seen:
                seen = step
                times.append(time.time())
            if fresh and step >= launch.target_step:
                step_seconds = (times[-1] - times[0]) / (len(times) - 1) if len(times) > 1 else 0.1
                time.sleep(fraction * step_seconds)
                if proc.poll() is None:
                    proc.kill()
                    launch.killed = True
                    launch.killed_after_step = logged_steps(run)[1]
                break
            time.sleep(0.01)
    deadline = time.time() + LAUNCH_TIMEOUT
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if proc.poll() is None:  # hung: a finding, not a reason to hang the benchmark or CI
        proc.kill()
        launch.problems.append(f"still running after {LAUNCH_TIMEOUT} s; killed")
    code = proc.wait()
    _read_log(log, launch, snapshot)
    return None if launch.killed else code


# ---------------------------------------------------------------- the experiment

def kill_resume(kills: int, seed: int, work: Path, launcher_kind: str, model: str | None,
                max_steps: int, save_steps: int, tol: float) -> dict:
    started = time.time()
    launcher = Launcher(launcher_kind)
    data = work / "train.jsonl"
    if model is None:
        model_dir = work / "base"
        launcher.build(model_dir, data)
        model = str(model_dir)
    else:
        from tiny_models import write_alpaca

        write_alpaca(data, 40)
    cfg = write_config(work, model, data, max_steps, save_steps)
    ref_run, run = work / "uninterrupted", work / "killed"
    # The uninterrupted run goes alongside the killed one: they share nothing but the config.
    reference = launcher.start(["train", str(cfg), f"output.dir={ref_run}"], work / "uninterrupted.log")

    rng = random.Random(seed)
    argv = ["train", str(cfg), f"output.dir={run}"]
    launches: list[Launch] = []
    landed = 0
    while landed < kills and len(launches) < 3 * kills + 3:
        launch = Launch(len(launches), resume=bool(launches))
        rc = run_once(launcher, argv, run, work / f"launch-{launch.index}.log", launch, rng, max_steps,
                      kills - landed)
        launches.append(launch)
        landed += launch.killed
        if rc is not None:
            if rc != 0:
                launch.problems.append(f"exit code {rc}; see {work / f'launch-{launch.index}.log'}")
            break  # finished before its kill: nothing left to interrupt
    if not launches or launches[-1].killed:
        final = Launch(len(launches), resume=True)
        rc = run_once(launcher, argv, run, work / f"launch-{final.index}.log", final, None, max_steps, 0)
        launches.append(final)
        if rc != 0:
            final.problems.append(f"the last resume exited with {rc}; see {work / f'launch-{final.index}.log'}")
    deadline = time.time() + LAUNCH_TIMEOUT
    while reference.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if reference.poll() is None:
        reference.kill()
    if reference.wait() != 0:
        launches[-1].problems.append(f"the uninterrupted run failed; see {work / 'uninterrupted.log'}")
    return _compare(kills, seed, launcher_kind, max_steps, save_steps, tol, ref_run, run, launches, landed,
                    time.time() - started)


def _compare(kills, seed, launcher_kind, max_steps, save_steps, tol, ref_run, run, launches, landed,
             seconds) -> dict:
    problems = [f"launch {la.index}: {p}" for la in launches for p in la.problems]
    result = {"kills_requested": kills, "kills_landed": landed, "launches": len(launches), "seed": seed,
              "launcher": launcher_kind, "max_steps": max_steps, "save_steps": save_steps}
    try:
        ref_w, ref_loss, ref_losses = adapter_and_losses(ref_run)
        w, loss, losses = adapter_and_losses(run)
    except (OSError, ValueError, KeyError) as exc:
        problems.append(f"cannot read the final adapters/metrics: {exc}")
    else:
        import numpy as np

        if set(ref_w) != set(w):
            problems.append("the adapters have different tensors")
        diff = max(float(np.abs(ref_w[k].astype(np.float64) - w[k]).max()) for k in ref_w if k in w)
        step_diff = max((abs(ref_losses[s] - losses.get(s, float("inf"))) for s in ref_losses), default=0.0)
        result.update(max_abs_weight_diff=diff, final_loss_uninterrupted=ref_loss, final_loss_resumed=loss,
                      final_loss_diff=abs(ref_loss - loss), max_step_loss_diff=step_diff,
                      logged_steps=len(losses))
        for name, value in (("weights", diff), ("final loss", abs(ref_loss - loss)), ("per-step loss", step_diff)):
            if not value <= tol:
                problems.append(f"{name} differ by {value:.3g} > {tol}")
    left = [s for s, ok in checkpoint_snapshot(run).items() if not ok]
    if left:
        problems.append(f"incomplete checkpoints left at the end: {sorted(left)}")
    if landed < kills:
        problems.append(f"only {landed} of {kills} kills landed before the run finished")
    result.update(
        resumed_from=[la.resumed_from for la in launches if la.resume],
        killed_after_step=[la.killed_after_step for la in launches if la.killed],
        partial_checkpoints_ignored=sum(len(la.partial_ignored) for la in launches),
        unmarked_checkpoint_used=any("not complete" in p for p in problems),
        problems=problems, ok=not problems, seconds=round(seconds, 1))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs that must land before the run ends")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--launcher", choices=("exec", "fork"), default="exec")
    parser.add_argument("--model", help="base model directory (or 'tiny'); default: a random tiny Llama")
    parser.add_argument("--max-steps", type=int, help="optimizer steps (default: 4 per kill, at least 8)")
    parser.add_argument("--save-steps", type=int, default=2)
    parser.add_argument("--tol", type=float, default=1e-4, help="max |difference| of weights and losses")
    parser.add_argument("--workdir", type=Path, help="keep runs and logs here (default: a temp dir)")
    args = parser.parse_args(argv)
    max_steps = args.max_steps or max(8, 4 * args.kills)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="lmtune-kill-resume-"))
    work.mkdir(parents=True, exist_ok=True)
    result = kill_resume(args.kills, args.seed, work, args.launcher, args.model, max_steps, args.save_steps, args.tol)
    result["workdir"] = str(work)
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
