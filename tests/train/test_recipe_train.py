"""lmtune/train/recipe.py's `train` end to end on a tiny model (a few seconds): what the run directory holds,
what is printed, auto values resolved before config.yaml is written, and --resume of a finished
or unfinished run. The recipe's functions one by one: test_recipe.py."""

from __future__ import annotations

import json
import math

import pytest
import torch

import lmtune.train.recipe as lt
from lmtune.config import load_config
from tiny_models import tiny_run_inputs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run_inputs(tmp_path_factory.mktemp("tiny"))


def _cfg(tiny, out, *extra):
    return load_config(None, [f"model.name_or_path={tiny.model}", f"data.train={tiny.data}", f"output.dir={out}",
                              "data.val_split=0.25", "data.max_length=64", "train.max_steps=2",
                              "train.learning_rate=auto", "train.epochs=auto", "train.batch_size=null",
                              "train.grad_accum=1", "train.logging_steps=1", "train.save_steps=1",
                              "train.load_best=false", "train.warmup_ratio=0", "output.report=false",
                              "eval.after_train=false", *extra])


def test_train_end_to_end_writes_the_run_and_a_finished_run_is_not_trained_again(tiny, tmp_path, capsys):
    from transformers import TrainerCallback

    from lmtune.run.artifacts import portable_base
    from lmtune.evaluate.summary import summarize

    class Seen(TrainerCallback):
        steps = []

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(state.global_step)

    root = tmp_path / "run"
    cfg = _cfg(tiny, root, "eval.after_train=true", "output.report=true", "eval.num_samples=1",
               "eval.max_new_tokens=2", "eval.forgetting_check=false")
    res = lt.train(cfg, quiet=True, callbacks=[Seen()])
    out = capsys.readouterr()
    assert Seen.steps == [1, 2]
    assert (res.run_dir, res.trainable_params, res.total_params) == (root, 16384, 39072)
    summary = json.loads((root / "train_summary.json").read_text())
    assert res.metrics == summary
    assert {k: summary[k] for k in ("method", "trainable_params", "total_params", "global_step", "epochs",
                                    "stop_at")} == {"method": "lora", "trainable_params": 16384,
                                                    "total_params": 39072, "global_step": 2, "epochs": 0.25,
                                                    "stop_at": {"max_steps": 2}}
    losses = [r["loss"] for r in map(json.loads, (root / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert summary["final_train_loss"] == losses[-1] and len(losses) == 2
    assert summary["eval_perplexity"] == pytest.approx(math.exp(summary["eval_loss"]))
    assert 0 < summary["train_seconds"] == round(summary["train_seconds"], 2) < 1000
    assert summary["peak_memory_mb"] > 10
    evaluation = json.loads((root / "eval.json").read_text())
    assert evaluation["validation"]["tuned"]["loss"] == pytest.approx(summary["eval_loss"])
    assert (root / "report.html").is_file() and (root / "heldout_test.jsonl").is_file()
    adapter = root / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "tokenizer.json").is_file()
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        portable_base(str(tiny.model))
    assert json.loads((adapter / "lmtune_template.json").read_text()) == \
        json.loads((root / "template.json").read_text())
    from lmtune.run.artifacts import model_card

    assert evaluation["task"]["tuned"]                     # so the card written after it shows it
    assert (adapter / "README.md").read_text() == model_card("adapter", cfg, 2, 0.25, summary, evaluation)
    # auto values resolved in place (one row per step on CPU), said, and written to config.yaml
    assert (cfg.train.learning_rate, cfg.train.epochs, cfg.train.batch_size) == (0.0033, 41.0, None)
    assert "train.epochs: auto -> 41 (8 examples -> 5 by example count; 8 packed rows / 1 per step" in out.out
    assert (root / "config.yaml").read_text() == cfg.to_yaml()
    from lmtune.train.distributed import usable_cores

    if usable_cores() > 1 and torch.get_num_threads() == 1:     # the CPU hint (conftest: one thread)
        assert "note: CPU training runs one thread per process; --nproc" in out.err
    assert not list(root.glob(".*.staging"))
    from lmtune.data.prepare import summary_line

    stats = json.loads((root / "data_stats.json").read_text())
    assert summary_line(stats) + "\n" in out.err and stats["examples"] == {"train": 8, "validation": 2}
    assert evaluation["validation"]["source"] == "validation split"
    # quiet: no progress lines of the evaluation, no closing summary (test_recipe.py checks them)
    assert "[eval]" not in out.out and summarize(evaluation) not in out.out and "artifacts:" not in out.out
    before = (root / "metrics.jsonl").read_text()
    again = lt.train(_cfg(tiny, root), resume=True, quiet=True)
    assert (again.run_dir, again.trainable_params, again.total_params, again.metrics) == \
        (root, 16384, 39072, summary)
    assert (root / "metrics.jsonl").read_text() == before and Seen.steps == [1, 2]
    assert "already finished" not in capsys.readouterr().out       # quiet


def test_a_finished_run_from_before_the_counts_were_saved_resumes_to_zero_counts(tiny, tmp_path, capsys):
    root = tmp_path / "run"
    (root / "adapter").mkdir(parents=True)
    summary = {"method": "lora", "global_step": 2, "stop_at": {"max_steps": 2}}
    (root / "train_summary.json").write_text(json.dumps(summary))
    res = lt.train(_cfg(tiny, root), resume=True)
    assert (res.run_dir, res.trainable_params, res.total_params, res.metrics) == (root, 0, 0, summary)
    assert "already finished training" in capsys.readouterr().out
    # without --resume the same directory is refused, never returned as finished
    from lmtune.errors import ConfigError

    with pytest.raises(ConfigError, match="is not empty"):
        lt.train(_cfg(tiny, root))


def test_resume_of_an_unfinished_run_checks_it_as_a_resume(tiny, tmp_path):
    from lmtune.errors import ConfigError

    root = tmp_path / "run"
    root.mkdir()
    (root / "config.yaml").write_text(_cfg(tiny, root, "lora.r=4").to_yaml())
    with pytest.raises(ConfigError, match="--resume: this config differs"):   # not "is not empty"
        lt.train(_cfg(tiny, root), resume=True, quiet=True)
