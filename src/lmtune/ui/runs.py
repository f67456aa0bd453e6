"""Reading RUNS_DIR for the web UI: which runs exist, each one's status and summary row, and the
rows of metrics.jsonl after a given index. Reads only the small files `lmtune train`/`lmtune eval`
write (never the weights); every name is checked to stay inside RUNS_DIR: a run directly under it
(NAME), or a trial of a sweep directly under it (SWEEP/trial-0003, as `lmtune sweep` lays them out)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from lmtune.report.build import RunData, cfg_get, data_label, read_metrics
from lmtune.report.compare import Row, row_of
from lmtune.run import process_record
from lmtune.run.layout import RunDir
from lmtune.ui.process import PROCESS_FILE, running_pid

# A run with no train_summary.json and no record of its process (an older lmtune) whose files changed
# this recently counts as running: metrics.jsonl gains a line every train.logging_steps.
ACTIVE_SECONDS = 120.0
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml: 200 configs parse in tens of ms


class NotARun(LookupError):
    """The name is not a run directory directly under RUNS_DIR (or would lead outside it)."""


@dataclass
class Status:
    state: str                  # running | finished | stopped | failed
    resume: str | None = None   # the command that continues a stopped run
    updated: float = 0.0        # newest modification time of the run's progress files
    detail: str | None = None   # how it ended: "interrupted at step 3", "killed ...", "exit code 1"


@dataclass
class RunSummary:
    name: str                   # NAME, or SWEEP/trial-NNNN for a sweep's trial
    status: Status
    row: Row                    # the same row `lmtune compare` prints (report/compare.py)
    base: str
    data: str
    objective: str
    steps: int | None
    max_steps: int | None

    def to_dict(self) -> dict:
        r = self.row
        return {"name": self.name, "status": self.status.state, "resume": self.status.resume,
                "detail": self.status.detail,
                "updated": self.status.updated, "method": r.method, "objective": self.objective,
                "base": self.base, "data": self.data, "steps": self.steps, "max_steps": self.max_steps,
                "task": r.task, "metric": r.metric, "base_value": r.base_value, "value": r.value,
                "forgetting": r.forgetting, "forgetting_ratio": r.forgetting_ratio,
                "train_seconds": r.train_seconds, "eval_loss": r.eval_loss}


SWEEP_FILES = ("study.db", "sweep.html", "best.yaml")   # what `lmtune sweep` writes into its DIR


def _plain(part: str) -> bool:
    return bool(part) and part not in (".", "..") and not part.startswith(".") and not any(
        c in part for c in "/\\\0")


def is_sweep(path: Path) -> bool:
    """A sweep directory: no config.yaml of its own, and a file `lmtune sweep` writes."""
    return not (path / "config.yaml").exists() and any((path / f).is_file() for f in SWEEP_FILES)


def resolve_run(runs_dir: Path, name: str) -> Path:
    """RUNS_DIR/name, refused (NotARun) unless name is one plain path component naming a run
    directory (config.yaml), or SWEEP/TRIAL with SWEEP a sweep directory, whose real path lies
    directly inside RUNS_DIR (or inside the sweep)."""
    parts = name.split("/") if name else []
    if not 1 <= len(parts) <= 2 or not all(_plain(p) for p in parts):
        raise NotARun(name)
    root = runs_dir.resolve()
    path = runs_dir.joinpath(*parts)
    try:
        real = path.resolve()
        if len(parts) == 2:
            sweep = runs_dir / parts[0]
            if sweep.resolve().parent != root or not is_sweep(sweep):
                raise NotARun(name)
            root = sweep.resolve()
    except (OSError, RuntimeError):
        raise NotARun(name) from None
    if real.parent != root or not (real / "config.yaml").is_file():
        raise NotARun(name)
    return path


def _runs_in(runs_dir: Path, prefix: str, folder: Path) -> list[str]:
    names = []
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        try:
            resolve_run(runs_dir, prefix + child.name)
        except NotARun:
            continue
        names.append(prefix + child.name)
    return names


def list_runs(runs_dir: Path) -> list[str]:
    """Names of the run directories directly under RUNS_DIR, sorted."""
    return _runs_in(runs_dir, "", runs_dir)


def list_sweeps(runs_dir: Path) -> dict[str, list[str]]:
    """Sweep directory name -> its trials' run names (SWEEP/trial-NNNN), sorted."""
    out = {}
    for child in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []:
        if _plain(child.name) and child.is_dir() and child.resolve().parent == runs_dir.resolve() and is_sweep(child):
            out[child.name] = _runs_in(runs_dir, child.name + "/", child)
    return out


def _json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def run_status(root: Path, summary: dict | None, now: float | None = None) -> Status:
    """From the run's records of its process: the one `lmtune train` writes itself (process.json,
    run/process_record.py) and, for a run this UI started, the UI's (ui_process.json, which also
    knows an exit code the run could not write, e.g. after a kill -9). running: a recorded process
    still runs (same pid and start time); finished: train_summary.json is there; stopped, with the
    resume command: interrupted (Ctrl-C, or the UI's stop) or killed (its process is gone without
    an end written); failed: it exited with an error. A run from an lmtune without process.json
    counts as running while its files changed within ACTIVE_SECONDS."""
    updated = max(_mtime(root / "metrics.jsonl"), _mtime(root / "checkpoints"), _mtime(root / "config.yaml"),
                  _mtime(root / "train_summary.json"))
    process = _json(root / PROCESS_FILE)
    record = process_record.read(root)
    alive = process_record.liveness(record) if record is not None else None
    if (process is not None and running_pid(process) is not None) or alive:
        return Status("running", None, updated)
    if summary is not None:
        return Status("finished", None, updated)
    fresh = (now or time.time()) - updated < ACTIVE_SECONDS
    if process is None and (record is None or alive is None) and fresh:   # no record, or another host's
        return Status("running", None, updated)
    resume = f"lmtune train {root / 'config.yaml'} --resume"
    resumable = RunDir(root).last_checkpoint() is not None
    if process is not None and process.get("exit") is not None:   # the UI saw it end
        if process.get("stopped") or resumable:
            return Status("stopped", resume, updated, _ended_by(process.get("exit"), record))
        return Status("failed", None, updated, f"exit code {process.get('exit')}")
    if record is not None and record.get("state") in ("running", "interrupted"):
        return Status("stopped", resume, updated, _ended_by(None, record))
    if record is not None and record.get("state") == "failed":
        return Status("failed", resume if resumable else None, updated, f"exit code {record.get('exit_code')}")
    if resumable or (process or {}).get("stopped"):
        return Status("stopped", resume, updated)
    return Status("failed", None, updated)


def _ended_by(exit_code: int | None, record: dict | None) -> str | None:
    """How a stopped run ended, in words: interrupted at step N, or killed."""
    if record is not None and record.get("state") == "interrupted":
        step = record.get("step")
        return "interrupted" + (f" at step {step}" if step is not None else "")
    if record is not None and record.get("state") == "running":
        return f"killed (process {record.get('pid')} is gone)"
    if exit_code is not None and exit_code < 0:
        return f"killed (signal {-exit_code})"
    return None


def last_step(path: Path) -> int | None:
    """The step of metrics.jsonl's last whole line, read from the file's end (a run may log a lot)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            fh.seek(max(0, fh.tell() - 4096))
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            step = json.loads(line).get("step")
        except (ValueError, AttributeError):
            continue
        if isinstance(step, int):
            return step
    return None


def load_config(root: Path) -> dict:
    try:
        config = yaml.load((root / "config.yaml").read_text(encoding="utf-8"), Loader=_LOADER)
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def load_light(root: Path, with_metrics: bool = False) -> RunData:
    """report/build.py's RunData without its UserError on a bad run; metrics only when asked."""
    return RunData(root, load_config(root), _json(root / "data_stats.json"),
                   read_metrics(root / "metrics.jsonl") if with_metrics else [],
                   _json(root / "train_summary.json"), _json(root / "eval.json"), _json(root / "env.json"))


# The runs page parses every run's config.yaml, train_summary.json and eval.json; YAML parsing is
# most of its time, so each run's parse is kept until one of the three files changes (size or
# modification time). Status is worked out afresh on every call: it depends on the clock.
_PARSED = ("config.yaml", "train_summary.json", "eval.json")
_memo: dict[Path, tuple[tuple, RunData]] = {}


def _signature(root: Path) -> tuple:
    out = []
    for name in _PARSED:
        try:
            st = (root / name).stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


def parsed(root: Path) -> RunData:
    """config, summary and eval of a run (no metrics, data stats or env), from the cache when unchanged."""
    key, sig = root.absolute(), _signature(root)
    hit = _memo.get(key)
    if hit is not None and hit[0] == sig:
        return hit[1]
    run = RunData(root, load_config(root), None, [], _json(root / "train_summary.json"), _json(root / "eval.json"))
    _memo[key] = (sig, run)
    return run


def summarize(root: Path, name: str | None = None) -> RunSummary:
    run = parsed(root)
    summary = run.summary
    steps = (summary or {}).get("global_step")
    if steps is None:
        steps = last_step(root / "metrics.jsonl")
    objective = cfg_get(run.config, "train.objective") or cfg_get(run.config, "objective") or "sft"
    return RunSummary(name or root.name, run_status(root, summary), row_of(run),
                      str(cfg_get(run.config, "model.name_or_path", "-")), data_label(run.config),
                      str(objective), steps, cfg_get(run.config, "train.max_steps"))


def summaries(runs_dir: Path) -> list[RunSummary]:
    return [summarize(runs_dir / name) for name in list_runs(runs_dir)]


def sweep_summaries(runs_dir: Path) -> dict[str, list[RunSummary]]:
    return {sweep: [summarize(runs_dir / n, n) for n in names] for sweep, names in list_sweeps(runs_dir).items()}


def metrics_after(root: Path, after: int) -> dict:
    """Rows of metrics.jsonl from index `after` on, and the index to ask from next. A resumed run
    rewrites the file shorter; then `reset` is true and every row comes again."""
    rows = read_metrics(root / "metrics.jsonl")
    reset = after > len(rows)
    start = 0 if reset else max(after, 0)
    return {"rows": rows[start:], "next": len(rows), "reset": reset}
