"""`lmtune sweep CONFIG [k=v ...] --param KEY=SPEC ... --trials N [--parallel P] [--metric M] --out DIR
[--storage URL]`: an Optuna search over a config; each trial an ordinary run in DIR/trial-NNNN.

Everything that can be wrong with the input is checked before the first trial (exit 2): the config,
each --param against the config's keys and ranges, the metric, the storage URL.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# lmtune's own modules are imported inside the functions below: `lmtune --help` imports every
# command module to build its parser and must stay light (no torch, transformers, yaml).


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="YAML config every trial starts from (e.g. configs/tiny-sql-lora.yaml)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides applied to every trial")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=SPEC", required=True,
                        help="a config key to search: KEY=v1,v2,... (a list; lists only = a grid) or "
                             "KEY=lo:hi[:log] (a range; integers for integer keys). Repeat for each key")
    parser.add_argument("--trials", type=int, metavar="N",
                        help="trials in the study in all (a rerun continues up to N); default: the grid's size")
    parser.add_argument("--parallel", type=int, default=1, metavar="P",
                        help="worker processes on this machine (on CPU one core each)")
    parser.add_argument("--metric", default="eval_loss",
                        help="what selects the best trial, on the validation split: eval_loss (minimised) "
                             "or a task metric such as execution_accuracy (maximised)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="sweep directory: trial runs, study.db, results.md, best.yaml, sweep.html")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna RDB storage URL (default sqlite:///DIR/study.db); postgresql://... "
                             "lets several machines work on one study. A URL with a password can come from "
                             "the environment variable LMTUNE_SWEEP_STORAGE instead (kept out of `ps`)")
    parser.add_argument("--study-name", metavar="NAME", help="study name in the storage (default: DIR's name)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed")
    parser.add_argument("--no-prune", action="store_true",
                        help="never stop a trial early (default: median pruning on validation loss)")
    parser.add_argument("--no-test", action="store_true",
                        help="do not score the winner on the test split")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # a spawned worker


def _spec(args: argparse.Namespace):
    """Validate every input and build the SweepSpec; raises UserError (exit 2) before any trial."""
    from lmtune.config import load_config
    from lmtune.data import resolve_files
    from lmtune.errors import UserError
    from lmtune.sweep.space import grid_space, parse_params
    from lmtune.sweep.study import STORAGE_ENV, SweepSpec, default_storage
    from lmtune.tasks import get_task

    config = str(Path(args.config).resolve())
    cfg = load_config(config, args.overrides)
    params = parse_params(args.param, config, args.overrides)
    allowed = ["eval_loss", *get_task(cfg.data.task or "generic").metrics]
    if args.metric not in allowed:
        raise UserError(f"--metric {args.metric}: not measured for this config", [f"allowed: {', '.join(allowed)}"])
    validation = resolve_files(cfg.data)["validation"]
    if args.metric != "eval_loss" and not validation:
        raise UserError(f"--metric {args.metric}: needs a validation file to generate answers on",
                        ["set data.validation (the bundled tasks have one), or select on --metric eval_loss"])
    grid = grid_space(params)
    size = None
    if grid is not None:
        size = 1
        for values in grid.values():
            size *= len(values)
    trials = args.trials if args.trials is not None else size
    if trials is None:
        raise UserError("--trials N: needed when a parameter is a range (the grid of lists has a size, "
                        "a range has not)")
    if trials < 1:
        raise UserError(f"--trials: got {trials}, must be >= 1", ["leave --trials out to run the whole grid"])
    if size is not None and trials > size:
        print(f"note: the grid has {size} points: running {size} trials, not {trials}")
        trials = size
    _check_parallel(args.parallel)
    out = Path(args.out).resolve()
    storage = args.storage or os.environ.get(STORAGE_ENV) or default_storage(out)
    spec = SweepSpec(config, list(args.overrides), params, args.metric, trials, out, storage,
                     args.study_name or out.name, args.seed, not args.no_prune, validation)
    if args.worker is None:   # the config a trial trains must load as one process: checked once, here
        from lmtune.sweep.trial import trial_config

        trial_config(spec, {}, out / "trial-check")
    return spec


def _check_parallel(parallel: int) -> None:
    """A worker is one single-threaded process: more workers than cores only share the cores."""
    from lmtune.errors import UserError
    from lmtune.train import processes

    cores = processes.usable_cores()
    if parallel < 1:
        raise UserError(f"--parallel: got {parallel}, must be >= 1")
    if parallel > cores:
        raise UserError(f"--parallel {parallel}: this machine gives lmtune {cores} core(s), one per worker",
                        [f"use --parallel {cores} or fewer; more machines: --storage URL and the same command "
                         "on each"])


def _holds_sweep(out: Path) -> bool:
    """DIR/study.db (the default storage), or lmtune's output marker of a sweep (any storage)."""
    import json

    from lmtune.run.layout import OUTPUT_MARKER

    if (out / "study.db").is_file():
        return True
    try:
        marker = json.loads((out / OUTPUT_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("written_by") == "lmtune" and marker.get("kind") == "sweep"


def _check_out(spec) -> None:
    """DIR holds this sweep or nothing, whatever the storage: lmtune never writes trial runs,
    results.md or best.yaml into someone else's folder."""
    from lmtune.errors import UserError
    from lmtune.run.layout import OUTPUT_MARKER

    if spec.out.is_file():
        raise UserError(f"--out {spec.out}: is a file", ["give a directory for the sweep"])
    if spec.out.is_dir() and any(spec.out.iterdir()) and not _holds_sweep(spec.out):
        raise UserError(f"--out {spec.out}: not empty and holds no sweep (no study.db, no {OUTPUT_MARKER})",
                        ["give a new directory; a sweep resumes from its own DIR (study.db or its marker)"])


def run(args: argparse.Namespace) -> int:
    import optuna

    from lmtune.sweep.study import counted, enqueue_grid, load_study, open_storage, recover_interrupted
    from lmtune.sweep.trial import work

    spec = _spec(args)
    if args.worker is not None:
        work(spec, open_storage(spec.storage), args.worker)
        return 0
    from lmtune.run.layout import write_output_marker
    from lmtune.sweep.study import default_storage

    own = spec.storage == default_storage(spec.out)
    _check_out(spec)
    # a user's storage is opened before DIR is made; the default one lives in DIR
    storage = None if own else open_storage(spec.storage)
    created = not spec.out.exists()
    spec.out.mkdir(parents=True, exist_ok=True)
    try:
        storage = storage or open_storage(spec.storage)
        study = load_study(spec, storage, spec.seed)
        if not _holds_sweep(spec.out):   # new or empty: mark it as this sweep's (resumable with any storage)
            write_output_marker(spec.out, "sweep")
    except Exception:
        if created:   # nothing half-written: remove only what this command just made
            import shutil

            shutil.rmtree(spec.out, ignore_errors=True)
        raise
    for n in recover_interrupted(study):
        print(f"trial {n} was interrupted (its worker stopped): its parameters run again")
    enqueue_grid(study, spec.params)
    done = counted(study)
    kind = "grid" if isinstance(study.sampler, optuna.samplers.GridSampler) else "TPE"
    print(f"sweep {spec.study_name}: {kind}, {spec.trials} trials ({done} already in the study), "
          f"{args.parallel} worker(s), metric {spec.metric} on validation; storage {spec.storage_shown}", flush=True)
    if done < spec.trials:
        seed = spec.seed + done
        if args.parallel == 1:
            work(spec, storage, seed)
        else:
            _run_workers(args, spec, study, seed)
    return _finish(args, spec, load_study(spec, storage, spec.seed))


def _run_workers(args, spec, study, seed: int) -> None:
    """P worker processes (`lmtune sweep ... --worker SEED`), one thread each, logs in DIR/logs/;
    this process prints each trial as it finishes."""
    import subprocess
    import time

    from lmtune.sweep.trial import describe

    logs = spec.out / "logs"
    logs.mkdir(exist_ok=True)
    procs = []
    for i in range(args.parallel):
        argv, env = worker_command(spec, seed + 1000 * i)
        log = open(logs / f"worker-{i}.log", "a", encoding="utf-8")
        procs.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    while True:
        alive = [p.poll() is None for p in procs]
        for t in study.get_trials(deepcopy=False):
            if t.state.is_finished() and t.number not in seen and not t.user_attrs.get("interrupted"):
                seen.add(t.number)
                print(describe(t), flush=True)
        if not any(alive):
            break
        time.sleep(2)
    bad = [i for i, p in enumerate(procs) if p.returncode]
    if bad:
        print(f"note: worker(s) {', '.join(map(str, bad))} exited with an error: see {logs}/worker-N.log",
              file=sys.stderr)


def worker_command(spec, seed: int) -> tuple[list[str], dict[str, str]]:
    """(argv, environment) of one worker process. The storage URL goes in the environment (readable
    by this user alone), never in argv, which `ps` shows to everyone."""
    from lmtune.sweep.study import STORAGE_ENV

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", STORAGE_ENV: spec.storage}
    argv = [sys.executable, "-m", "lmtune", "sweep", spec.config, *spec.overrides,
            *(f"--param={p.spec}" for p in spec.params), "--trials", str(spec.trials), "--metric", spec.metric,
            "--out", str(spec.out), "--study-name", spec.study_name, "--seed", str(spec.seed)]
    argv += ["--no-prune"] if not spec.prune else []
    return argv + ["--worker", str(seed)], env


def _finish(args, spec, study) -> int:
    from lmtune.run.layout import write_text
    from lmtune.sweep import html
    from lmtune.sweep.results import (RESULTS_MD, collect, evaluate_winner, to_markdown, to_text,
                                      write_best_yaml)

    rows, notes = collect(study, spec)
    print("\n" + to_text(rows, spec), end="")
    write_text(spec.out / RESULTS_MD, to_markdown(rows, spec, notes))
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    best = study.best_trial if complete else None
    best_yaml, test = None, None
    if best is not None:
        path = write_best_yaml(spec, best)
        best_yaml = path.read_text(encoding="utf-8")
        print(f"best: trial {best.number}, {spec.metric} {best.value:.6g} (validation): {path}")
        if not args.no_test:
            test = evaluate_winner(spec, best)
            if test and test.get("task"):
                from lmtune.evaluate.summary import summarize

                print("the winner on the test split (measured once, after selection):\n" + summarize(test))
    page = html.write(spec.out / html.SWEEP_HTML, rows, spec, best, best_yaml, test, notes)
    print(f"wrote {spec.out / RESULTS_MD}, {page}" + (f", {spec.out / 'best.yaml'}" if best else ""))
    if best is None:
        print("no trial completed: see the reasons above", file=sys.stderr)
        return 1
    return 0
