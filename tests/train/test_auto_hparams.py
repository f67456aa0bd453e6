"""train.learning_rate: auto and train.epochs: auto (lmtune/train/hparams.py): the rule at published
anchors and on the embedded base, explicit values winning, clear errors, and the resolved values
reaching the Trainer and the run's config.yaml."""

from __future__ import annotations

import json

import pytest
import yaml

from lmtune.config import load_config
from lmtune.errors import ConfigError
from lmtune.train.hparams import Batch, DataSize, ModelSize, epochs_for, learning_rate_for, max_epochs, resolve
from tiny_models import save_tiny_model, write_alpaca


@pytest.mark.parametrize("method, hidden, lr", [
    ("lora", 4096, 2e-4),     # Llama 3.1 8B / Mistral 7B: the QLoRA paper's 7B/13B rate
    ("qlora", 5120, 1.8e-4),  # 13B: still about 2e-4
    ("qlora", 8192, 1.3e-4),  # 65-70B: about the QLoRA paper's 33B/65B rate (1e-4)
    ("full", 8192, 1.1e-5),
    ("full", 4096, 2e-5),     # the seed's full fine-tuning rate at 7B
    ("lora", 3584, 2.2e-4),   # Qwen2.5 7B
    ("lora", 256, 1e-3),      # the embedded base: 1e-3 x 10 epochs, the study's best LoRA point
    ("full", 256, 2e-4),      # full 2e-4 x 10 epochs reached 98-100% with forgetting ok in the study
])
def test_learning_rate_anchors(method, hidden, lr):
    got, why = learning_rate_for(method, ModelSize(hidden, 7_000_000_000))
    assert got == lr and f"hidden {hidden}" in why


def test_lora_over_full_is_ten_at_7b_and_five_on_the_embedded_base():
    def ratio(hidden):
        return learning_rate_for("lora", ModelSize(hidden))[0] / learning_rate_for("full", ModelSize(hidden))[0]
    assert ratio(4096) == pytest.approx(10) and ratio(256) == pytest.approx(5)
    # twice the width, 2^0.58 = 1.5x lower for LoRA, 2^0.83 = 1.78x for full: 2048 -> 3e-4 and 3.6e-5
    assert learning_rate_for("lora", ModelSize(2048))[0] == 3e-4
    assert learning_rate_for("full", ModelSize(2048))[0] == 3.6e-5


@pytest.mark.parametrize("data, batch, model, epochs, per_epoch", [
    # 60K examples of ~200 tokens on a GPU (16 rows of 512 per step): the seed's 2 epochs
    (DataSize(60_000, 12_000_000, 512), Batch(4, 4, 1), ModelSize(4096), 2, 1465),
    # 5K examples of ~300 tokens in rows of 2048 at 7B: 4 epochs by count (184 steps), above the
    # 80-step floor; on the embedded base the floor is 400 steps: 9 epochs
    (DataSize(5_000, 1_500_000, 2048), Batch(4, 4, 1), ModelSize(4096), 4, 46),
    (DataSize(5_000, 1_500_000, 2048), Batch(4, 4, 1), ModelSize(256), 9, 46),
    # the task: 1.5K short chat examples on CPU (4 rows of 512): 22 steps/epoch; the
    # embedded base's 400-step floor wants 19 epochs (under its cap, 22)
    (DataSize(1_500, 45_000, 512), Batch(1, 4, 1), ModelSize(256), 19, 22),
    # 200 such examples: 3 steps per epoch; the floor wants 134 epochs, capped at 22
    (DataSize(200, 6_000, 512), Batch(1, 4, 1), ModelSize(256), 22, 3),
    # 200 examples at 7B on CPU: 4 steps per epoch; the 80-step floor wants 20 epochs, capped at 10
    (DataSize(200, 8_000, 512), Batch(1, 4, 1), ModelSize(4096), 10, 4),
    # unpacked: one row per example; 2 processes halve the steps per epoch (50 x 5 > 80)
    (DataSize(800, 40_000, 512, packing=False), Batch(2, 4, 2), ModelSize(4096), 5, 50),
    # width unknown: the 7B floor (80 steps): 6 steps per epoch -> 14 epochs, capped at 10
    (DataSize(300, 12_000, 512), Batch(1, 4, 1), None, 10, 6),
])
def test_epochs_from_examples_and_steps(data, batch, model, epochs, per_epoch):
    got, steps, why = epochs_for(data, batch, model)
    assert (got, steps) == (epochs, per_epoch), why


@pytest.mark.parametrize("hidden, cap", [(4096, 10), (8192, 10), (896, 16), (256, 22), (None, 10)])
def test_the_epoch_cap_is_the_seeds_ten_at_7b_and_grows_with_sqrt_of_the_width_factor(hidden, cap):
    assert max_epochs(ModelSize(hidden) if hidden else None) == cap


def test_explicit_values_and_max_steps_win():
    model, data, batch = ModelSize(256), DataSize(1_500, 45_000, 512), Batch(1, 4, 1)
    out = resolve(5e-4, 2.0, -1, "full", model, data, batch)
    assert (out.learning_rate, out.epochs, out.lines) == (5e-4, 2.0, [])
    out = resolve("auto", "auto", 30, "lora", model, data, batch)
    assert out.learning_rate == 1e-3 and out.epochs == 19.0
    assert "train.max_steps=30 wins" in out.lines[1]


@pytest.mark.parametrize("hidden, steps, lora, full", [
    (256, None, 1e-3, 2e-4), (256, 700, 1e-3, 2e-4),   # up to 700 steps: the width rule as it is
    # `category`'s 5 epochs in the study: 2e-4 x (1 + 4 x sqrt(700/1190)), 2e-5 x (1 + 9 x ...)
    (256, 1190, 8.1e-4, 1.6e-4),
    (256, 5000, 5e-4, 8.7e-5),
    (896, 5000, 3.1e-4, 3.9e-5),    # Qwen2.5-0.5B: 4.8e-4 and 7.1e-5 at <= 700 steps
    (4096, 10_000, 2e-4, 2e-5),     # the 7B anchors do not move with the steps
    (8192, 10_000, 1.3e-4, 1.1e-5), # nor does a factor below 1 grow back towards 1
])
def test_rate_falls_with_steps_on_small_models_only(hidden, steps, lora, full):
    assert learning_rate_for("lora", ModelSize(hidden), steps)[0] == lora
    assert learning_rate_for("full", ModelSize(hidden), steps)[0] == full


def test_epochs_first_then_the_rate_from_their_steps():
    # `category`-like: 990 examples that each fill a row of 128 alone, 4 rows per step: 248 steps
    # per epoch, 5 epochs by example count = 1,240 steps -> 2e-4 x (1 + 4 x sqrt(700/1240)) = 8e-4
    model, data, batch = ModelSize(256), DataSize(990, 990 * 70, 128, True, 990), Batch(1, 4, 1)
    out = resolve("auto", "auto", -1, "lora", model, data, batch)
    assert (out.learning_rate, out.epochs, out.steps_per_epoch) == (8e-4, 5.0, 248)
    assert "shrunk for 1,240 optimizer steps > 700" in out.lines[0], out.lines[0]
    assert out.lines[1].startswith("train.epochs: auto -> 5 (")
    # an explicit epoch count sets the steps: 10 x 248 = 2,480 -> 2e-4 x 3.13 = 6.3e-4
    assert resolve("auto", 10.0, -1, "lora", model, data, batch).learning_rate == 6.3e-4
    # train.max_steps wins over epochs, for the rate too: 3,000 steps -> 5.9e-4
    assert resolve("auto", "auto", 3000, "lora", model, data, batch).learning_rate == 5.9e-4
    # fewer steps: the floor raises the epochs (400 steps at hidden 256: 27 of 15 steps, capped at 22),
    # the rate stays 1e-3 (330 steps)
    small = resolve("auto", "auto", -1, "lora", model, DataSize(190, 190 * 40, 128), batch)
    assert (small.learning_rate, small.epochs) == (1e-3, 22.0) and "shrunk" not in small.lines[0]
    assert "for at least 400 optimizer steps (capped at 22) (330 steps)" in small.lines[1], small.lines[1]


def test_unresolvable_auto_names_the_key():
    with pytest.raises(ConfigError, match="train.epochs: auto needs the training data"):
        resolve(2e-4, "auto", -1, "lora", ModelSize(256), None, Batch())
    with pytest.raises(ConfigError, match="train.learning_rate: auto needs the model's width"):
        resolve("auto", 3.0, -1, "lora", None, DataSize(10, 100), Batch())


def test_resolved_values_reach_the_trainer_and_config_yaml(tmp_path, capsys):
    from lmtune.train.recipe import train

    model_dir = save_tiny_model(tmp_path / "base", "llama")   # hidden 32
    data = write_alpaca(tmp_path / "train.jsonl", 40)
    cfg = load_config(None, [f"model.name_or_path={model_dir}", f"data.train={data}",
                             f"output.dir={tmp_path / 'run'}", "data.max_length=96", "data.val_split=0",
                             "train.batch_size=16", "train.grad_accum=1", "train.scheduler=constant",
                             "train.warmup_ratio=0", "train.logging_steps=1", "train.load_best=false",
                             "train.save_steps=1000",
                             "output.report=false", "eval.after_train=false"])
    train(cfg, quiet=True)
    printed = capsys.readouterr().out
    # hidden 32: 2e-4 x (4096/32)^0.58 = 3.3e-3; 40 examples -> one step per epoch, so the step
    # floor (1,337 steps) asks for more epochs than the cap allows: 10 x sqrt(16.7) = 41
    assert "train.learning_rate: auto -> 3.3e-03 (lora, hidden 32" in printed
    assert "train.epochs: auto -> 41 (" in printed
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["train"]["learning_rate"] == 0.0033 and saved["train"]["epochs"] == 41.0
    logs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = {round(r["learning_rate"], 6) for r in logs if "learning_rate" in r}
    assert lrs == {0.0033}                       # constant schedule: the Trainer ran the resolved rate
    assert max(r.get("epoch", 0) for r in logs) == pytest.approx(41.0)
    # the saved config runs as written: numbers now, not auto
    assert load_config(tmp_path / "run" / "config.yaml").learning_rate == 0.0033
