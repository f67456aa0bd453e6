"""Reading RUNS_DIR for the web UI: which runs exist, each one's status and summary row, and the
rows of metrics.jsonl after a given index. Reads only the small files `lmtune train`/`lmtune eval`
write (never the weights); every name is checked to stay a direct child of RUNS_DIR."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from lmtune.report.build import RunData, cfg_get, data_label, read_metrics
from lmtune.report.compare import Row, row_of
from lmtune.run.layout import RunDir

# A run with no train_summary.json whose files changed this recently counts as running: lmtune
# records no pid, and metrics.jsonl gains a line every train.logging_steps.
ACTIVE_SECONDS = 120.0
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml: 200 configs parse in tens of ms


class NotARun(LookupError):
    """The name is not a run directory directly under RUNS_DIR (or would lead outside it)."""


@dataclass
class Status:
    state: str                  # running | finished | stopped | failed
    resume: str | None = None   # the command that continues a stopped run
    updated: float = 0.0        # newest modification time of the run's progress files


@dataclass
class RunSummary:
    name: str
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
                "updated": self.status.updated, "method": r.method, "objective": self.objective,
                "base": self.base, "data": self.data, "steps": self.steps, "max_steps": self.max_steps,
                "task": r.task, "metric": r.metric, "base_value": r.base_value, "value": r.value,
                "forgetting": r.forgetting, "forgetting_ratio": r.forgetting_ratio,
                "train_seconds": r.train_seconds, "eval_loss": r.eval_loss}


def resolve_run(runs_dir: Path, name: str) -> Path:
    """RUNS_DIR/name, refused (NotARun) unless name is one plain path component naming a run
    directory (config.yaml) whose real path lies inside RUNS_DIR."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        raise NotARun(name)
    root = runs_dir.resolve()
    path = (runs_dir / name)
    try:
        real = path.resolve()
    except (OSError, RuntimeError):
        raise NotARun(name) from None
    if real.parent != root or not (real / "config.yaml").is_file():
        raise NotARun(name)
    return path


def list_runs(runs_dir: Path) -> list[str]:
    """Names of the run directories directly under RUNS_DIR, sorted."""
    names = []
    for child in sorted(runs_dir.iterdir()) if runs_dir.is_dir() else []:
        try:
            resolve_run(runs_dir, child.name)
        except NotARun:
            continue
        names.append(child.name)
    return names


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
    """finished: train_summary.json is there. Otherwise running when the run's files changed within
    ACTIVE_SECONDS; else stopped when a complete checkpoint can be resumed, failed when none can."""
    updated = max(_mtime(root / "metrics.jsonl"), _mtime(root / "checkpoints"), _mtime(root / "config.yaml"),
                  _mtime(root / "train_summary.json"))
    if summary is not None:
        return Status("finished", None, updated)
    if (now or time.time()) - updated < ACTIVE_SECONDS:
        return Status("running", None, updated)
    if RunDir(root).last_checkpoint() is not None:
        return Status("stopped", f"lmtune train {root / 'config.yaml'} --resume", updated)
    return Status("failed", None, updated)


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


def summarize(root: Path) -> RunSummary:
    run = parsed(root)
    summary = run.summary
    steps = (summary or {}).get("global_step")
    if steps is None:
        steps = last_step(root / "metrics.jsonl")
    objective = cfg_get(run.config, "train.objective") or cfg_get(run.config, "objective") or "sft"
    return RunSummary(root.name, run_status(root, summary), row_of(run),
                      str(cfg_get(run.config, "model.name_or_path", "-")), data_label(run.config),
                      str(objective), steps, cfg_get(run.config, "train.max_steps"))


def summaries(runs_dir: Path) -> list[RunSummary]:
    return [summarize(runs_dir / name) for name in list_runs(runs_dir)]


def metrics_after(root: Path, after: int) -> dict:
    """Rows of metrics.jsonl from index `after` on, and the index to ask from next. A resumed run
    rewrites the file shorter; then `reset` is true and every row comes again."""
    rows = read_metrics(root / "metrics.jsonl")
    reset = after > len(rows)
    start = 0 if reset else max(after, 0)
    return {"rows": rows[start:], "next": len(rows), "reset": reset}
