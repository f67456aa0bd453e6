"""The final validation pass of `train` follows the eval settings: eval.after_train=false skips it
(train_summary.json has no eval_loss), eval.final_val_loss=true keeps it without the rest of the
evaluation (what sweep trials select on), and the data line printed before training says how the
automatic validation split was sized."""

from __future__ import annotations

import json

import pytest

import lmtune.train.recipe as lt
from lmtune.config import load_config
from lmtune.sweep.trial import trial_overrides
from tiny_models import tiny_run_inputs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run_inputs(tmp_path_factory.mktemp("tiny"))


def _train(tiny, out, *extra):
    cfg = load_config(None, [f"model.name_or_path={tiny.model}", f"data.train={tiny.data}", f"output.dir={out}",
                             "data.val_split=0.25", "data.max_length=64", "train.max_steps=1",
                             "train.learning_rate=0.001", "train.epochs=1", "train.batch_size=2",
                             "train.grad_accum=1", "train.save_steps=1000", "train.load_best=false",
                             "output.report=false", "eval.after_train=false", *extra])
    return lt.train(cfg, quiet=True)


def test_after_train_false_skips_the_final_validation_pass(tiny, tmp_path, capsys):
    result = _train(tiny, tmp_path / "run")
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert "eval_loss" not in summary and "eval_perplexity" not in summary and result.metrics == summary
    assert not (tmp_path / "run" / "eval.json").exists()
    assert "2 validation (25% of the data, at most 2,000)" in capsys.readouterr().err


def test_final_val_loss_keeps_only_the_validation_pass(tiny, tmp_path):
    result = _train(tiny, tmp_path / "run", "eval.final_val_loss=true")
    assert result.metrics["eval_loss"] > 0 and result.metrics["eval_perplexity"] > 1
    assert not (tmp_path / "run" / "eval.json").exists()      # no test-split generation, no forgetting check


def test_sweep_trials_keep_the_validation_loss_they_select_on(tmp_path):
    from types import SimpleNamespace

    spec = SimpleNamespace(params=[], overrides=[])
    overrides = trial_overrides(spec, {}, tmp_path)
    assert "eval.after_train=false" in overrides and "eval.final_val_loss=true" in overrides
