"""Config: YAML + overrides -> typed dataclasses; every problem reported at once, naming the key."""

import subprocess
import sys

import pytest

from lmtune.cli import main
from lmtune.config import DEFAULT_LR, load_config
from lmtune.errors import ConfigError


def _problems(tmp_path, text, overrides=()):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides))
    return info.value.problems


def test_defaults_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: full\ndata:\n  task: sql\ntrain:\n  epochs: 2\n")
    cfg = load_config(path, ["train.epochs=1.5", "lora.target_modules=[q_proj,v_proj]", "train.learning_rate=3e-4"])
    assert cfg.method == "full" and cfg.train.epochs == 1.5
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.train.learning_rate == 3e-4  # "3e-4" is a YAML string; coerced to float
    assert cfg.data.packing is True and cfg.data.train_on_prompt is False
    assert cfg.model.trust_remote_code is False and cfg.model.allow_pickle is False


def test_learning_rate_and_epochs_default_to_auto():
    cfg = load_config(None, ["data.task=sql"])
    assert cfg.train.learning_rate == "auto" and cfg.train.epochs == "auto"
    with pytest.raises(ConfigError, match="train.learning_rate: auto is resolved"):
        cfg.learning_rate  # noqa: B018 - only lmtune.train.hparams turns auto into a number
    # literal values: a loop over DEFAULT_LR itself would pass with the table's entries swapped
    for method, lr in (("full", 2e-5), ("lora", 2e-4), ("qlora", 2e-4)):   # null: the pre-auto default
        assert load_config(None, ["data.task=sql", f"method={method}", "train.learning_rate=null"]).learning_rate == lr
    assert set(DEFAULT_LR) == {"full", "lora", "qlora"}


def test_all_problems_reported_together(tmp_path):
    problems = _problems(tmp_path, "methd: lora\ntrain:\n  lr: 1\n  epochs: many\nlora:\n  r: 0\n"
                                   "data:\n  task: sql\n  format: xml\n")
    assert "methd: unknown key (did you mean 'method'?)" in problems[0]
    assert any(p.startswith("train.lr: unknown key (did you mean 'train.learning_rate'?)") for p in problems)
    assert "train.epochs: got 'many' (str), expected a number or auto" in problems
    assert "lora.r: got 0, must be >= 1" in problems
    assert any(p.startswith("data.format: got 'xml', allowed: auto, alpaca, chat") for p in problems)
    assert len(problems) == 5


def test_range_and_cross_key_rules(tmp_path):
    problems = _problems(tmp_path, "data:\n  train: a.jsonl\n  val_split: 0\ntrain:\n  eval_steps: 10\n"
                                   "  learning_rate: -1\n  save_total_limit: 0\n")
    assert "train.learning_rate: got -1.0, must be > 0.0" in problems
    assert "train.save_total_limit: got 0, must be >= 1" in problems
    problems = _problems(tmp_path, "data:\n  train: a.jsonl\n  val_split: 0\ntrain:\n  eval_steps: 10\n")
    assert problems == ["train.eval_steps: needs validation data; set data.validation or data.val_split > 0"]
    assert _problems(tmp_path, "method: lora\n") == [
        "data.train: no training data; set data.train to a file or data.task to sql/json"]


def test_bad_yaml_names_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name_or_path: tiny\n  bad: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: not valid YAML"):
        load_config(path)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_override_syntax_error():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.epochs"])
    assert "overrides look like key.sub=value" in info.value.problems[0]


def test_cli_config_show_exit_codes(tmp_path, capsys):
    assert main(["config", "show", "data.task=sql", "lora.r=8"]) == 0
    out = capsys.readouterr().out
    assert "r: 8" in out and "task: sql" in out and "learning_rate: auto" in out
    assert main(["config", "show", "data.task=sql", "lora.rank=8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "lora.rank: unknown key" in err and "Traceback" not in err


def test_help_does_not_import_torch():
    code = "import sys; from lmtune.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(None, ["data.task=sql", "lora.target_modules=all-linear", "train.learning_rate=1e-3"])
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path) == cfg
    assert load_config(path).lora.target_modules == "all-linear"
