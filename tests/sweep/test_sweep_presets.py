"""`lmtune sweep` on the shipped presets (distributed.nproc auto, train.rows_per_step), the limits
on --trials and --parallel, --storage next to a user's folder, and a storage password kept out of
every printed line and every worker's command line."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from lmtune.commands.sweep import worker_command
from lmtune.sweep.space import parse_params
from lmtune.sweep.study import STORAGE_ENV, SweepSpec, hide_password
from lmtune.sweep.trial import trial_config
from lmtune.train import processes

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SQL_LORA = ROOT / "configs" / "tiny-sql-lora.yaml"
SECRET = "s3cr%40tpw"           # URL-encoded: the password is "s3cr@tpw"
PG_URL = f"postgresql://alice:{SECRET}@127.0.0.1:9/lmtune"


@pytest.fixture(autouse=True)
def _no_storage_env(monkeypatch):
    monkeypatch.delenv(STORAGE_ENV, raising=False)


@pytest.fixture
def no_trial(monkeypatch):
    """For the inputs refused before anything: a trial that starts fails the test at once (in this
    process it would otherwise train the whole preset)."""
    import lmtune.sweep.trial

    def refuse(*a, **k):
        raise AssertionError("a trial started: the input was not refused before anything")

    monkeypatch.setattr(lmtune.sweep.trial, "work", refuse)


def _sweep(capfd, *argv) -> tuple[int, str, str]:
    """`lmtune sweep ARGV` in this process: (exit code, stdout, stderr), captured at the file
    descriptors (the libraries' loggers included)."""
    from lmtune.cli import main

    capfd.readouterr()
    rc = main(["sweep", *map(str, argv)])
    res = capfd.readouterr()
    return rc, res.out, res.err


def _spec(config: Path, out: Path, overrides=(), storage=None) -> SweepSpec:
    params = parse_params(["lora.r=2,4"] if "full" not in config.name else ["train.learning_rate=1e-4,2e-4"],
                          str(config), list(overrides))
    return SweepSpec(str(config), list(overrides), params, "eval_loss", 2, out,
                     storage or f"sqlite:///{out}/study.db", out.name)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_preset_trains_a_trial_as_one_process_with_its_rows_per_step(config, tmp_path):
    from lmtune.config import load_config

    preset = load_config(str(config), [])
    resolved = load_config(str(config), [])
    processes.resolve(resolved)           # what `lmtune train` would launch on this machine
    cfg = trial_config(_spec(config, tmp_path), {}, tmp_path / "trial")
    assert (cfg.distributed.backend, cfg.distributed.nproc, cfg.distributed.nnodes) == ("none", 1, 1)
    assert isinstance(cfg.train.grad_accum, int)
    rows = cfg.train.micro_batch("cpu") * cfg.train.grad_accum
    if preset.train.rows_per_step is not None:
        assert rows == preset.train.rows_per_step
    else:
        d = resolved.distributed
        assert rows == resolved.train.micro_batch("cpu") * resolved.train.grad_accum * d.nproc * d.nnodes


def test_a_preset_without_rows_per_step_multiplies_grad_accum_by_the_process_count(tmp_path):
    over = ["train.rows_per_step=null", "distributed.nproc=2", "train.grad_accum=3"]
    cfg = trial_config(_spec(SQL_LORA, tmp_path, over), {}, tmp_path / "trial")
    assert (cfg.distributed.nproc, cfg.train.grad_accum) == (1, 6)


def _sql_subset(tmp_path: Path, split: str, n: int) -> Path:
    """The first n records of the bundled SQL split: the preset's task, format and metric, less work."""
    from lmtune.tasks import task_files

    path = tmp_path / f"{split}-{n}.jsonl"
    path.write_text("".join(task_files("sql")[split].read_text().splitlines(keepends=True)[:n]))
    return path


def test_the_readme_sweep_on_tiny_sql_lora_completes_its_trials_and_resumes_with_storage(tmp_path, monkeypatch,
                                                                                          capfd):
    # the shipped preset as it is (distributed nproc auto, train.rows_per_step), on 40 training and 4
    # validation records, one step per trial; in this process (`lmtune sweep` runs trials in-process)
    monkeypatch.chdir(tmp_path)
    out, db = tmp_path / "sw", tmp_path / "db" / "study.db"
    db.parent.mkdir()
    argv = [SQL_LORA, f"data.train={_sql_subset(tmp_path, 'train', 40)}",
            f"data.validation={_sql_subset(tmp_path, 'validation', 4)}", "train.max_steps=1", "data.max_length=160",
            "train.rows_per_step=2", "--param", "lora.r=2,4", "--out", out, "--storage", f"sqlite:///{db}",
            "--no-test"]
    rc, stdout, stderr = _sweep(capfd, *argv)
    assert rc == 0, stdout + stderr
    study = optuna.load_study(study_name="sw", storage=f"sqlite:///{db}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"], stdout
    ran = yaml.safe_load((out / "trial-0000" / "config.yaml").read_text())
    assert ran["distributed"]["nproc"] == 1 and ran["train"]["grad_accum"] == 2   # rows_per_step 2, batch 1
    # DIR holds no study.db (the storage is elsewhere), yet it is this sweep's: the rerun resumes
    rc, stdout, stderr = _sweep(capfd, *argv)
    assert rc == 0, stderr
    assert "(2 already in the study)" in stdout


@pytest.mark.parametrize("flags, expect", [
    (["--trials", "0"], "--trials: got 0, must be >= 1"),
    (["--trials", "-3"], "--trials: got -3, must be >= 1"),
    (["--parallel", "0"], "--parallel: got 0, must be >= 1"),
    (["--parallel", "100000"], "--parallel 100000: this machine gives lmtune"),
])
def test_trials_and_parallel_out_of_range_exit_2_before_anything(tmp_path, flags, expect, capfd, no_trial):
    out = tmp_path / "sw"
    rc, stdout, stderr = _sweep(capfd, SQL_LORA, "--param", "lora.r=2,4", "--out", out, *flags)
    assert rc == 2, stdout + stderr
    assert expect in stderr and "Traceback" not in stderr
    assert not out.exists()


def test_storage_url_never_writes_into_a_users_folder(tmp_path, capfd, no_trial):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.md").write_text("my notes")
    (out / "best.yaml").write_text("mine: true\n")
    db = tmp_path / "study.db"
    rc, stdout, stderr = _sweep(capfd, SQL_LORA, "--param", "lora.r=2,4", "--out", out, "--storage", f"sqlite:///{db}")
    assert rc == 2, stdout + stderr
    assert "not empty and holds no sweep" in stderr
    assert (out / "results.md").read_text() == "my notes" and (out / "best.yaml").read_text() == "mine: true\n"
    assert sorted(p.name for p in out.iterdir()) == ["best.yaml", "results.md"] and not db.exists()


def test_a_storage_password_is_masked_in_messages(tmp_path, capfd, no_trial):
    out = tmp_path / "sw"
    rc, stdout, stderr = _sweep(capfd, SQL_LORA, "--param", "lora.r=2,4", "--out", out, "--storage", PG_URL)
    assert rc == 2, stdout + stderr
    text = stdout + stderr
    assert "cannot open the study storage" in stderr and "alice:***@127.0.0.1" in stderr
    assert SECRET not in text and "s3cr@tpw" not in text and "Traceback" not in text
    assert not out.exists()


def test_workers_get_the_storage_url_from_the_environment_not_argv(tmp_path):
    spec = _spec(SQL_LORA, tmp_path / "sw", storage=PG_URL)
    argv, env = worker_command(spec, 7)
    assert not any("s3cr" in a for a in argv) and "--storage" not in argv
    assert env[STORAGE_ENV] == PG_URL and argv[-2:] == ["--worker", "7"]
    assert spec.storage_shown == "postgresql://alice:***@127.0.0.1:9/lmtune"
    assert hide_password("could not connect: s3cr@tpw", PG_URL) == "could not connect: ***"
