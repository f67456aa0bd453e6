"""One worker: ask the study for a trial, train it as an ordinary run (lmtune.train.recipe.train, in this
process), report the validation loss at every evaluation so the pruner can stop it early, tell
the study the result. A failing trial is told as failed with its reason; the worker goes on.
"""

from __future__ import annotations

import contextlib
import gc
from pathlib import Path
from typing import Any

from lmtune.config import load_config
from lmtune.errors import UserError
from lmtune.evaluate import evaluate_run
from lmtune.sweep.study import SweepSpec, counted, load_study, worker_id
from lmtune.train import processes
from lmtune.train.recipe import train


def trial_overrides(spec: SweepSpec, values: dict[str, Any], run_dir: Path) -> list[str]:
    """The config a trial trains: the sweep's config and overrides, the trial's values, its own run
    directory, and no test-split evaluation (trials are selected on validation data only: the final
    validation loss is kept)."""
    by_key = {p.key: p for p in spec.params}
    return [*spec.overrides, *(by_key[k].override(v) for k, v in values.items()),
            f"output.dir={run_dir}", "eval.after_train=false", "eval.final_val_loss=true", "output.report=false"]


def trial_config(spec: SweepSpec, values: dict[str, Any], run_dir: Path):
    """A trial runs in one process (a worker is one core on CPU): a preset that launches several
    keeps its rows per optimizer step. `auto` and train.rows_per_step are resolved as `lmtune train`
    resolves them; with rows_per_step set, one process accumulates rows_per_step / batch_size
    micro-batches, otherwise train.grad_accum is multiplied by the process count it stands for."""
    resolve = processes.resolve
    overrides = trial_overrides(spec, values, run_dir)
    cfg = load_config(spec.config, overrides)
    resolve(cfg)   # nproc auto -> a count, grad_accum from rows_per_step
    d = cfg.distributed
    procs = d.nproc * d.nnodes
    if d.backend != "none" or procs > 1:
        overrides += ["distributed.backend=none", "distributed.nproc=1", "distributed.nnodes=1"]
        if cfg.train.rows_per_step is None:
            overrides.append(f"train.grad_accum={cfg.train.grad_accum * procs}")
        cfg = load_config(spec.config, overrides)
        resolve(cfg)
    return cfg


def _pruning_callback(trial, sign: float):
    """Reports eval_loss (negated when the study maximises a task metric, so that the pruner's
    "worse" is a higher loss) after every evaluation; raises TrialPruned when the pruner says so."""
    import optuna
    from transformers import TrainerCallback

    reported: set[int] = set()   # the final evaluation repeats the last step's: report it once

    class ReportToTrial(TrainerCallback):
        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            loss = (metrics or {}).get("eval_loss")
            if loss is None or state.global_step in reported:
                return
            reported.add(state.global_step)
            trial.report(sign * loss, state.global_step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {state.global_step}: validation loss {loss:.4g} "
                                         "worse than the median of earlier trials at that step")

    return ReportToTrial()


def run_trial(trial, spec: SweepSpec) -> float:
    values = {p.key: p.suggest(trial) for p in spec.params}
    run_dir = spec.out / f"trial-{trial.number:04d}"
    trial.set_user_attr("run_dir", str(run_dir))
    cfg = trial_config(spec, values, run_dir)
    sign = 1.0 if spec.direction == "minimize" else -1.0
    result = train(cfg, quiet=True, callbacks=[_pruning_callback(trial, sign)])
    m = result.metrics
    for key in ("train_seconds", "peak_memory_mb", "eval_loss", "trainable_params", "total_params"):
        if m.get(key) is not None:
            trial.set_user_attr(key, m[key])
    if spec.metric == "eval_loss":
        if m.get("eval_loss") is None:
            raise UserError("no validation loss to select on", ["give validation data (data.validation or "
                                                                "data.val_split > 0)"])
        return float(m["eval_loss"])
    ev = evaluate_run(run_dir, test=spec.validation_files, base=False, progress=False)
    forgetting = ev.get("forgetting") or {}
    if forgetting.get("ratio") is not None:
        trial.set_user_attr("forgetting_ratio", forgetting["ratio"])
    value = ((ev.get("task") or {}).get("tuned") or {}).get(spec.metric)
    if value is None:
        raise UserError(f"{spec.metric}: not measured on the validation files")
    return float(value)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UserError):
        return exc.render().removeprefix("error: ")
    return f"{type(exc).__name__}: {exc}"


def describe(t) -> str:
    """One line per finished trial, for the terminal and the worker logs."""
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.params.items())
    state = t.state.name.lower()
    if state == "complete":
        what = f"value {t.value:.4g}"
    elif state == "pruned":
        what = t.user_attrs.get("prune_reason", "pruned")
    else:
        what = t.user_attrs.get("fail_reason", "failed")
    return f"trial {t.number} {state}: {what} ({params})"


def _reset_peak_rss() -> None:
    """Trials share a worker process, and its peak RSS (what train_summary.json reports on CPU) would
    carry the largest earlier trial's peak: Linux resets the high-water mark on request."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


@contextlib.contextmanager
def _log_to(path: Path):
    """A trial's progress bars and notes go to its log file; the terminal gets one line per trial."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        yield


def work(spec: SweepSpec, storage, sampler_seed: int) -> int:
    """Run trials until the study holds spec.trials (or the grid is done); returns how many ran here."""
    import optuna
    from optuna.trial import TrialState

    study = load_study(spec, storage, sampler_seed)
    ran = 0
    while counted(study) < spec.trials:
        grid_done = isinstance(study.sampler, optuna.samplers.GridSampler) and study.sampler.is_exhausted(study)
        if grid_done and not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            break
        trial = study.ask()
        trial.set_user_attr("worker", worker_id())
        _reset_peak_rss()
        try:
            with _log_to(spec.out / "logs" / f"trial-{trial.number:04d}.log"):
                value = run_trial(trial, spec)
            study.tell(trial, value)
        except optuna.TrialPruned as exc:
            trial.set_user_attr("prune_reason", str(exc))
            study.tell(trial, state=TrialState.PRUNED)
        except Exception as exc:  # recorded with its reason; the sweep goes on
            trial.set_user_attr("fail_reason", _reason(exc))
            study.tell(trial, state=TrialState.FAIL)
        ran += 1
        print(describe(study.trials[trial.number]), flush=True)
        gc.collect()
    return ran
