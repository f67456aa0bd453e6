"""The Optuna study behind `lmtune sweep`: RDB storage (DIR/study.db, SQLite, by default), the
sweep's settings stored with it, recovery of trials whose worker died, and the trial budget.

Several processes, or several machines with `--storage postgresql://...`, share one study: each
asks Optuna for the next trial, runs it, and tells the result; the storage serialises them.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

from lmtune.errors import UserError
from lmtune.run.layout import process_alive
from lmtune.sweep.space import Param, grid_space

SETTINGS_ATTR = "lmtune_sweep"     # study user attribute: what the study was created for
# The storage URL travels to worker processes (and may come from the user) through the environment,
# never on a command line: `ps` shows every user a process's arguments, and a URL may hold a password.
STORAGE_ENV = "LMTUNE_SWEEP_STORAGE"


@dataclass
class SweepSpec:
    config: str                      # the YAML every trial starts from
    overrides: list[str]             # key=value applied to it before the trial's parameters
    params: list[Param]
    metric: str                      # eval_loss or a task metric (on the validation split)
    trials: int
    out: Path
    storage: str
    study_name: str
    seed: int = 0
    prune: bool = True
    validation_files: list[str] = field(default_factory=list)

    @property
    def storage_shown(self) -> str:
        """The storage URL as lmtune prints it: its password as ***."""
        return hide_password(self.storage, self.storage)

    @property
    def direction(self) -> str:
        return "minimize" if self.metric == "eval_loss" else "maximize"

    def settings(self) -> dict:
        """What must not change when a sweep resumes (a study mixing two searches compares nothing)."""
        # the file's content too: a config edited mid-sweep would make best.yaml differ from the trials
        digest = hashlib.sha256(Path(self.config).read_bytes()).hexdigest()[:16]
        return {"config": self.config, "config_sha256": digest, "overrides": list(self.overrides),
                "metric": self.metric, "params": [p.spec for p in self.params]}


def hide_password(text: str, url: str) -> str:
    """`text` with the password of storage `url` (as written, and URL-decoded) replaced by ***."""
    m = re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:([^/]*)@", url)
    if not m or not m.group(1):
        return text
    for secret in sorted({m.group(1), unquote(m.group(1))}, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def default_storage(out: Path) -> str:
    return f"sqlite:///{(out / 'study.db').resolve()}"


def open_storage(url: str):
    """An Optuna RDBStorage; anything that fails here is the user's URL (exit 2, no trial run)."""
    import optuna  # noqa: F401 -- outside the try below: a missing optuna is not the URL's fault

    # SQLite serialises writers: wait for the lock instead of failing when two workers tell at once
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    try:
        return _rdb_storage(url, kwargs)
    except Exception as exc:  # sqlalchemy/driver errors have no common base worth naming
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(hide_password(f"--storage {url}: cannot open the study storage "
                                      f"({type(exc).__name__}: {reason})", url),
                        ["give an SQLAlchemy URL Optuna can use: sqlite:///PATH/study.db (one machine), "
                         "postgresql://USER:PASS@HOST/DB (several machines; needs `pip install psycopg2-binary`)",
                         "or leave --storage out: the study goes to DIR/study.db"]) from None


def _rdb_storage(url: str, engine_kwargs: dict, attempts: int = 3):
    """Two processes opening a new storage at once (the same command started on two machines)
    both create Optuna's tables, and one fails ("table trial_params already exists", "UNIQUE
    constraint failed: alembic_version"; 3 of 20 simultaneous openers): the tables are there when
    it tries again."""
    import optuna
    import sqlalchemy.exc

    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except sqlalchemy.exc.DBAPIError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.5)


def load_study(spec: SweepSpec, storage, sampler_seed: int):
    """Create the study or load it, refusing one that was created for another search."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)   # lmtune prints one line per trial itself
    grid = grid_space(spec.params)
    sampler = (_grid_sampler(grid, sampler_seed) if grid is not None
               else optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=min(10, max(2, spec.trials // 3))))
    # Median of the completed trials' validation loss at the same step; none pruned before 3 finish
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0) if spec.prune
              else optuna.pruners.NopPruner())
    study = optuna.create_study(storage=storage, study_name=spec.study_name, direction=spec.direction,
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, spec.settings())
    elif stored != spec.settings():
        diff = [f"{k}: the study has {stored.get(k)!r}, this command {v!r}"
                for k, v in spec.settings().items() if stored.get(k) != v]
        raise UserError(f"study {spec.study_name!r} in {spec.storage_shown} was started for another search",
                        diff + ["rerun with the study's settings to resume it, or use another --out "
                                "(or --study-name) for a new search"])
    return study


def _grid_sampler(grid: dict, seed: int):
    """Optuna's GridSampler, minus its `study.stop()` after the last point: that call is only
    allowed inside `study.optimize`, and the workers (trial.py) ask and tell and stop by themselves."""
    import optuna

    class Grid(optuna.samplers.GridSampler):
        def after_trial(self, study, trial, state, values) -> None:
            return None

    return Grid(grid, seed=seed)


def recover_interrupted(study) -> list[int]:
    """Trials left RUNNING by a worker on this machine that no longer exists (killed sweep):
    mark them failed ("interrupted", not counted) and queue their parameters again, so a resumed
    sweep re-runs exactly what was cut off and nothing that finished. A worker killed between
    Optuna's ask and recording itself in the trial (one storage write) leaves a RUNNING trial that
    names no worker: it cannot be told from a live worker's, and is left as it is."""
    import optuna
    from optuna.trial import TrialState

    host = socket.gethostname()
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w_host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if w_host != host or not pid.isdigit() or process_alive(int(pid)):
            continue
        live = optuna.trial.Trial(study, t._trial_id)
        live.set_user_attr("interrupted", True)
        live.set_user_attr("fail_reason", f"interrupted: worker {t.user_attrs['worker']} stopped mid-trial; "
                                          "its parameters were queued again")
        study.tell(t.number, state=TrialState.FAIL)
        # a worker killed before drawing every parameter has only some in t.params; a queued (grid)
        # trial's point is in fixed_params until drawn: queue the point, or GridSampler refuses the retry
        params = {**t.system_attrs.get("fixed_params", {}), **t.params}
        study.enqueue_trial(params, user_attrs={"retry_of": t.number})
        recovered.append(t.number)
    return recovered


def counted(study) -> int:
    """Trials that use the budget: finished or running, not queued, not interrupted."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state != TrialState.WAITING and not t.user_attrs.get("interrupted"))


def enqueue_grid(study, params: list[Param]) -> int:
    """Queue every grid point the study has not seen yet. Workers then take queued trials, which
    the storage hands to one worker each: Optuna's GridSampler alone lets two workers that start
    together draw the same point (measured: both workers of a 2-point grid trained lora.r=64)."""
    grid = grid_space(params)
    if grid is None:
        return 0
    # a queued trial keeps its parameters in system_attrs until a worker takes it
    seen = [t.params or t.system_attrs.get("fixed_params", {}) for t in study.get_trials(deepcopy=False)
            if not t.user_attrs.get("interrupted")]
    added = 0
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values))
        if point not in seen:
            study.enqueue_trial(point, skip_if_exists=True)
            added += 1
    return added

