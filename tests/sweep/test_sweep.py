"""`lmtune sweep`: bad input exits 2 before any trial; a grid sweep of real tiny trainings leaves
trial runs, a results table, best.yaml that trains as is, sweep.html; pruning on validation loss;
a failing trial is recorded and the sweep goes on; a killed two-worker sweep on one SQLite study
resumes without re-running finished trials."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

import early_launch
from lmtune.cli import main
from lmtune.config import load_config
from lmtune.run.layout import process_alive
from tiny_models import save_tiny_model, write_alpaca

SRC = Path(__file__).resolve().parents[2] / "src"


def _inputs(root: Path) -> tuple[Path, Path]:
    base = save_tiny_model(root / "base", "llama")
    data = write_alpaca(root / "train.jsonl", 40)
    cfg = {"model": {"name_or_path": str(base)},
           "data": {"train": [str(data)], "val_split": 0.2, "max_length": 96, "template": "alpaca"},
           "method": "lora",
           "train": {"max_steps": 4, "batch_size": 2, "grad_accum": 1, "learning_rate": 5e-3,
                     "logging_steps": 1, "eval_steps": 2, "save_total_limit": 1, "load_best": False,
                     "warmup_ratio": 0},
           "output": {"report": False}}
    path = root / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return root, path


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return _inputs(tmp_path_factory.mktemp("sweep"))


def _study(out: Path):
    return optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}")


@pytest.mark.parametrize("param, expect", [
    ("lora.rr=2,4", "unknown config key (did you mean 'lora.r'?)"),
    ("train.learning_rate=1e-3:1e-4", "must be below hi"),
    ("train.learning_rate=0:1e-3:log", "log range must stay above 0"),
    ("lora.r=0,8", "lora.r: got 0, must be >= 1"),
    ("output.dir=a,b", "the sweep sets output.* for each trial itself"),
])
def test_bad_param_exits_2_before_any_trial(setup, tmp_path, capsys, param, expect):
    _, cfg = setup
    out = tmp_path / "sw"
    assert main(["sweep", str(cfg), "--param", param, "--trials", "2", "--out", str(out)]) == 2
    assert expect in capsys.readouterr().err
    assert not out.exists()


def test_storage_that_cannot_be_opened_exits_2(setup, tmp_path, capsys):
    _, cfg = setup
    out = tmp_path / "sw"
    for url in ("sqlite:////no/such/dir/study.db", "nosuchdb://x"):
        assert main(["sweep", str(cfg), "--param", "lora.r=2,4", "--out", str(out), "--storage", url]) == 2
        assert "cannot open the study storage" in capsys.readouterr().err
        assert not out.exists()


def test_grid_sweep_failed_trial_best_yaml_and_resume(setup, tmp_path, capsys):
    _, cfg = setup
    out = tmp_path / "grid"
    # [nope] passes the config schema but names no module of the model: that trial fails at preflight
    argv = ["sweep", str(cfg), "--param", "lora.r=2,4", "--param", "lora.target_modules=all-linear,[nope]",
            "--out", str(out), "--no-test"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "grid, 4 trials" in printed
    study = _study(out)
    states = sorted(t.state.name for t in study.trials)
    assert len(study.trials) == 4 and states.count("FAIL") == 2
    for t in study.trials:
        if t.state.name == "FAIL":
            assert t.params["lora.target_modules"] == "[nope]" and "nope" in t.user_attrs["fail_reason"]
        else:   # selection on validation loss, recorded with the trial's own run directory
            assert t.value == pytest.approx(yaml.safe_load((Path(t.user_attrs["run_dir"]) / "train_summary.json")
                                                           .read_text())["eval_loss"])
    assert {(t.params["lora.r"], t.params["lora.target_modules"]) for t in study.trials} == \
        {(r, m) for r in (2, 4) for m in ("all-linear", "[nope]")}   # the whole grid, once each
    best = study.best_trial
    assert f"best: trial {best.number}" in printed
    # best.yaml trains as is: the user's config plus the winning values, its own output dir
    cfg_best = load_config(out / "best.yaml")
    assert cfg_best.lora.r == best.params["lora.r"] and cfg_best.output.dir == str(out / "best")
    assert cfg_best.eval.after_train is True
    table = (out / "results.md").read_text()
    assert table.count("| trial-000") == 4 and "eval_loss (validation)" in table and "fail" in table
    page = (out / "sweep.html").read_text()
    assert "http://" not in page and "https://" not in page
    pngs = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(pngs) >= 3 and all(base64.b64decode(p)[:4] == b"\x89PNG" for p in pngs)
    assert "[nope]" in page and "lora.target_modules" in page
    # a rerun finds every trial done: nothing is trained again
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("trial-*/train_summary.json")}
    assert main(argv) == 0
    assert "4 already in the study" in capsys.readouterr().out
    assert len(_study(out).trials) == 4
    assert stamp == {p: p.stat().st_mtime_ns for p in out.glob("trial-*/train_summary.json")}
    # the same command after the config file changed would mix two searches: refused, exit 2
    cfg.write_text(cfg.read_text() + "\n")
    try:
        assert main(argv) == 2
        assert "config_sha256" in capsys.readouterr().err
    finally:
        cfg.write_text(cfg.read_text()[:-1])


def test_pruned_on_validation_loss(setup, tmp_path):
    _, cfg = setup
    out = tmp_path / "prune"
    out.mkdir()
    # three finished trials whose validation loss was far lower at the same steps: the median
    # pruner stops the real trial at its first evaluation (step 2 of 4)
    study = optuna.create_study(storage=f"sqlite:///{out / 'study.db'}", study_name=out.name)
    dist = optuna.distributions.FloatDistribution(1e-3, 5e-3, log=True)
    for lr in (1e-3, 2e-3, 3e-3):
        study.add_trial(optuna.trial.create_trial(params={"train.learning_rate": lr},
                                                  distributions={"train.learning_rate": dist},
                                                  value=0.01, intermediate_values={2: 0.01, 4: 0.01}))
    assert main(["sweep", str(cfg), "--param", "train.learning_rate=1e-3:5e-3:log", "--trials", "4",
                 "--out", str(out), "--no-test"]) == 0
    t = _study(out).trials[3]
    assert t.state.name == "PRUNED" and list(t.intermediate_values) == [2]
    assert "pruned at step 2" in t.user_attrs["prune_reason"]
    run = Path(t.user_attrs["run_dir"])
    assert (run / "config.yaml").is_file() and not (run / "adapter").exists()


def _lmtune(*args, **kw):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-m", "lmtune", *args], env=env, start_new_session=True, **kw)


def _peek(out: Path):
    """The trials, read without creating Optuna's tables: the sweep's driver creates them when it
    starts, and two processes creating them at once make one fail (measured: 3 of 20 openers,
    "table trial_params already exists"; the driver then exits 2 and removes DIR)."""
    if not (out / "study.db").is_file():
        raise FileNotFoundError(out / "study.db")
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'study.db'}", skip_table_creation=True,
                                         skip_compatibility_check=True)
    return optuna.load_study(study_name=out.name, storage=storage).trials


def _training(trials) -> bool:
    """A trial is being trained: RUNNING, its worker recorded, every parameter drawn."""
    return any(t.state.name == "RUNNING" and "worker" in t.user_attrs and len(t.params) == 2 for t in trials)


def _two_worker_args(cfg: Path, out: Path) -> list[str]:
    return ["sweep", str(cfg), "--param", "train.learning_rate=1e-3:5e-3:log", "--param", "lora.r=2,4",
            "--trials", "3", "--out", str(out), "--no-prune", "--no-test"]


def _two_workers_killed(inputs: tuple[Path, Path]) -> dict:
    """`lmtune sweep --parallel 2`, SIGKILLed (driver and workers) once a trial has finished and
    another is training. Started when collection ends (tests/helpers/early_launch.py): it needs
    nothing from other tests, and its three processes then use the core the others leave idle."""
    root, cfg = inputs
    out = root / "par"
    proc = _lmtune(*_two_worker_args(cfg, out), "--parallel", "2", stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    ready = False   # a trial finished, both workers have taken one, and one is training now
    while time.time() < deadline and not ready:
        time.sleep(0.2)
        try:
            trials = _peek(out)
        except Exception:   # the study is still being created
            continue
        ready = ("COMPLETE" in [t.state.name for t in trials] and _training(trials)
                 and len({t.user_attrs.get("worker") for t in trials} - {None}) == 2)
        if ready:
            # freeze every process, then look again: a tiny trial can finish between the look
            # above and the kill, which would leave no trial to interrupt; and a worker that has
            # just taken its next trial may not have recorded itself in it yet (one storage write
            # after Optuna's ask: such a trial cannot be told from a live worker's, see
            # recover_interrupted), so wait for a moment outside that window
            os.killpg(proc.pid, signal.SIGSTOP)
            try:
                trials = _peek(out)
            except Exception:   # a worker was frozen while committing: the database stays locked
                trials = []
            ready = _training(trials) and all("worker" in t.user_attrs for t in trials)
            if not ready:
                os.killpg(proc.pid, signal.SIGCONT)
    os.killpg(proc.pid, signal.SIGKILL)      # the driver and both workers, mid-sweep
    proc.wait()
    return {"cfg": cfg, "out": out, "ready": ready}


def _two_workers_inputs(root: Path) -> tuple[Path, Path]:
    # open a SQLite storage once here, in the main thread: the polling thread then imports nothing
    # (sqlalchemy loads on first use; tests/helpers/early_launch.py on imports and threads)
    optuna.storages.RDBStorage(f"sqlite:///{root / 'warm-up.db'}")
    return _inputs(root)


early_launch.register("two-worker-sweep", __file__, "test_two_workers_on_one_sqlite_study_killed_and_resumed",
                      _two_workers_inputs, _two_workers_killed)


@pytest.mark.slow
def test_two_workers_on_one_sqlite_study_killed_and_resumed(capsys):
    killed = early_launch.result("two-worker-sweep")
    out, args = killed["out"], _two_worker_args(killed["cfg"], killed["out"])
    assert killed["ready"], "a trial should have finished and another be running before the kill"
    deadline = time.time() + 60
    before = _study(out).trials
    workers = {t.user_attrs["worker"] for t in before}
    assert len(workers) == 2                 # two processes worked on the one SQLite study
    # the workers were children of the killed driver, SIGKILLed but maybe not yet torn down:
    # resume once they are gone, as it would after a real crash
    while any(process_alive(int(w.rpartition(":")[2])) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    finished = {t.number: t.params for t in before if t.state.is_finished()}
    cut = {t.number: t.params for t in before if t.state.name == "RUNNING"}
    assert any(len(p) == 2 for p in cut.values()), "the kill should land while a worker trains a trial"
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("trial-*/train_summary.json")}

    assert main(args) == 0                   # resume in this process
    printed = capsys.readouterr().out
    after = _study(out).trials
    for n in cut:
        assert f"trial {n} was interrupted" in printed
        assert after[n].state.name == "FAIL" and after[n].user_attrs["interrupted"]
        # the retry trains what the cut trial had drawn: all of it for the one that was training;
        # a worker frozen between taking its next trial and drawing its values had drawn less
        assert any(t.user_attrs.get("retry_of") == n and cut[n].items() <= t.params.items()
                   and t.state.name == "COMPLETE" for t in after)
    counted = [t for t in after if not t.user_attrs.get("interrupted")]
    assert len(counted) == 3 and all(t.state.name == "COMPLETE" for t in counted)
    for n, params in finished.items():       # finished trials were not run again
        assert after[n].params == params and after[n].state.name == "COMPLETE"
    assert all(p.stat().st_mtime_ns == m for p, m in stamp.items())


def test_grid_points_are_queued_once_so_parallel_workers_never_repeat_one(setup):
    from lmtune.sweep.space import parse_params
    from lmtune.sweep.study import enqueue_grid

    _, cfg = setup
    params = parse_params(["lora.r=2,4", "lora.use_rslora=true,false"], str(cfg), [])
    study = optuna.create_study()
    assert enqueue_grid(study, params) == 4
    assert enqueue_grid(study, params) == 0          # a second driver (another machine) adds nothing
    # two workers asking at the same time get two different points
    a, b = study.ask(), study.ask()
    pa = {p.key: p.suggest(a) for p in params}
    pb = {p.key: p.suggest(b) for p in params}
    assert pa != pb
    queued = [t.params or t.system_attrs["fixed_params"] for t in study.get_trials(deepcopy=False)]
    assert sorted(map(str, queued)) == sorted(str({"lora.r": r, "lora.use_rslora": u})
                                              for r in (2, 4) for u in (True, False))


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("grid", [True, False])
def test_a_trial_killed_before_its_params_were_drawn_is_retried_with_what_it_had(setup, tmp_path, grid):
    """The windows the kill test cannot aim at: a worker dies after taking a trial (RUNNING, its
    worker recorded) but before drawing all its parameters. A grid trial's point sits in the queue
    entry it took (params still empty): the retry must carry that point, or GridSampler refuses the
    retry and the point is queued again besides (measured before the fix: the point was queued twice
    and the retry failed with "All parameters must be specified when using GridSampler with
    enqueue_trial")."""
    import socket

    from lmtune.sweep.space import parse_params
    from lmtune.sweep.study import SweepSpec, counted, enqueue_grid, load_study, recover_interrupted

    _, cfg = setup
    spec_params = ["lora.r=2,4"] + (["lora.use_rslora=true,false"] if grid else ["train.learning_rate=1e-3:5e-3"])
    params = parse_params(spec_params, str(cfg), [])
    spec = SweepSpec(str(cfg), [], params, "eval_loss", 4, tmp_path, f"sqlite:///{tmp_path / 'study.db'}", "s")
    study = load_study(spec, spec.storage, 0)
    assert enqueue_grid(study, params) == (4 if grid else 0)
    dead = study.ask()                         # the killed worker's trial: one parameter drawn, or none
    dead.set_user_attr("worker", f"{socket.gethostname()}:{_dead_pid()}")
    drawn = {} if grid else {"lora.r": params[0].suggest(dead)}
    point = study.get_trials(deepcopy=False)[dead.number].system_attrs.get("fixed_params", drawn)
    live = study.ask()                         # a worker that is still running (this process)
    live.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    assert recover_interrupted(study) == [dead.number]
    assert enqueue_grid(study, params) == 0    # the grid point is queued once: as the retry
    trials = study.get_trials(deepcopy=False)
    assert trials[live.number].state.name == "RUNNING" and counted(study) == 1
    retry = study.ask()
    while "retry_of" not in retry.user_attrs:   # grid points queued before the kill come first
        retry = study.ask()
    assert retry.user_attrs["retry_of"] == dead.number
    values = {p.key: p.suggest(retry) for p in params}
    assert point and point.items() <= values.items()
