"""Bad input, second half: advise, compare, report, estimate, data, and train's numbers (NaN, inf,
out of range) and config path. Same sandbox and contract as test_reliability_commands.py (exit 2,
one message naming the flag or key and the path, the tree under tmp_path unchanged, nothing loaded).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from test_reliability_commands import Tmp, run_case

ROOT = Path(__file__).resolve().parents[2]
CASES: dict[str, callable] = {}


def case(fn):
    CASES[fn.__name__.removeprefix("case_").replace("_", "-")] = fn
    return fn


# ---------------------------------------------------------------- advise

def advise(*flags: str) -> list[str]:
    return ["advise", "--yes", "--gpu", "cpu", *flags]


@case
def case_advise_out_exists(t):
    t.write("advised.yaml", "# my own config\n")
    return advise("--out", "advised.yaml"), "--out advised.yaml: already exists", "pass --overwrite"


@case
def case_advise_out_is_a_directory(t):
    t.mkdir("cfgs")
    return advise("--out", "cfgs"), "--out cfgs: is a directory", "e.g. --out out.txt"


@case
def case_advise_answers_missing(t):
    return advise("--answers", "a.yaml"), "--answers a.yaml: file not found", "check the path"


@case
def case_advise_answers_binary(t):
    t.write("a.yaml", b"\x00\xff\xfe")
    return advise("--answers", "a.yaml"), "--answers a.yaml:1: not UTF-8 text", "save the file as UTF-8"


@case
def case_advise_gpu_mem_nan(t):
    return advise("--gpu-mem", "nan"), "--gpu-mem: got nan, must be a finite number", ""


@case
def case_advise_num_gpus_zero(t):
    return advise("--num-gpus", "0"), "--num-gpus: got 0, must be >= 1", ""


@case
def case_advise_seq_len_too_small(t):
    return advise("--seq-len", "2"), "--seq-len: got 2, must be >= 8", ""


@case
def case_advise_data_missing(t):
    return advise("--data", "nope.jsonl"), "--data nope.jsonl: file not found", "check the path"


@case
def case_advise_examples_negative(t):
    return advise("--examples", "-5"), "--examples: got -5, must be >= 0", ""


# ---------------------------------------------------------------- compare, report

@case
def case_compare_not_a_run(t):
    return ["compare", str(t.base), str(t.run)], f"{t.base}: not a run directory (no config.yaml)", "output.dir"


@case
def case_compare_markdown_exists(t):
    t.write("cmp.md", "mine\n")
    return ["compare", str(t.run), "--markdown", "cmp.md"], "--markdown cmp.md: already exists", "pass --overwrite"


@case
def case_compare_html_is_a_directory(t):
    t.mkdir("site")
    return ["compare", str(t.run), "--html", "site"], "--html site: is a directory", "e.g. --html out.txt"


@case
def case_compare_same_file_twice(t):
    return (["compare", str(t.run), "--markdown", "x", "--html", "x"], "--markdown and --html both name x",
            "give two different files")


@case
def case_report_missing_run(t):
    return ["report", "nope"], "report: nope: no such run directory", "check the path"


@case
def case_report_not_a_run(t):
    return ["report", str(t.base)], f"{t.base}: not a run directory (no config.yaml)", "output.dir"


@case
def case_report_run_is_a_file(t):
    return ["report", str(t.prompts)], f"report: {t.prompts}: is a file, expected a run directory", "give the path"


@case
def case_report_read_only_run(t):
    if os.geteuid() == 0:
        pytest.skip("root writes through permission bits")
    t.run.chmod(0o500)
    return ["report", str(t.run)], f"report: {t.run}: cannot write in this directory", "make it writable"


# ---------------------------------------------------------------- estimate, data

@case
def case_estimate_epochs_nan(t):
    return ["estimate", "--epochs", "nan"], "--epochs: got nan, must be a finite number", "invalid estimate options"


@case
def case_estimate_epochs_inf(t):
    return ["estimate", "--epochs", "inf"], "--epochs: got inf, must be a finite number", "invalid estimate options"


@case
def case_estimate_mfu_above_one(t):
    return ["estimate", "--mfu", "2"], "--mfu: got 2.0, must be <= 1", "invalid estimate options"


@case
def case_estimate_lora_dropout_nan(t):
    return ["estimate", "--lora-dropout", "nan"], "--lora-dropout: got nan, must be a finite", "invalid estimate"


@case
def case_estimate_gpu_mem_negative(t):
    return ["estimate", "--gpu-mem", "-8"], "--gpu-mem: got -8.0, must be > 0", "invalid estimate options"


@case
def case_estimate_price_inf(t):
    return ["estimate", "--price-per-hour", "inf"], "--price-per-hour: got inf, must be a finite", "invalid estimate"


@case
def case_estimate_tokens_per_example_zero(t):
    return ["estimate", "--tokens-per-example", "0"], "--tokens-per-example: got 0, must be >= 1", "invalid estimate"


@case
def case_data_max_length_too_small(t):
    return ["data", "check", str(t.data), "--max-length", "4"], "--max-length: got 4, must be >= 8", ""


@case
def case_data_samples_negative(t):
    return ["data", "check", str(t.data), "--samples", "-1"], "--samples: got -1, must be >= 0", ""


@case
def case_data_file_missing(t):
    return ["data", "check", "nope.jsonl"], "nope.jsonl: file not found", "fix each line below"


# ---------------------------------------------------------------- train: numbers and the config path

def train(t: Tmp, *overrides: str) -> list[str]:
    return ["train", str(t.config), *overrides]


@case
def case_train_learning_rate_nan(t):
    return train(t, "train.learning_rate=.nan"), "train.learning_rate: got nan, must be a finite number", "1 problem"


@case
def case_train_learning_rate_nan_string(t):
    return train(t, "train.learning_rate=nan"), "train.learning_rate: got nan, must be a finite number", "1 problem"


@case
def case_train_epochs_inf(t):
    return train(t, "train.epochs=.inf"), "train.epochs: got inf, must be a finite number", "1 problem"


@case
def case_train_lora_dropout_nan(t):
    return train(t, "lora.dropout=.nan"), "lora.dropout: got nan, must be a finite number", "1 problem"


@case
def case_train_warmup_ratio_inf(t):
    return train(t, "train.warmup_ratio=-.inf"), "train.warmup_ratio: got -inf, must be a finite number", "1 problem"


@case
def case_train_val_split_nan(t):
    return train(t, "data.val_split=.nan"), "data.val_split: got nan, must be a finite number", "1 problem"


@case
def case_train_forgetting_warn_inf(t):
    return train(t, "eval.forgetting_warn=.inf"), "eval.forgetting_warn: got inf, must be a finite", "1 problem"


@case
def case_train_weight_decay_nan(t):
    return train(t, "train.weight_decay=.nan"), "train.weight_decay: got nan, must be a finite number", "1 problem"


@case
def case_train_max_grad_norm_inf(t):
    return train(t, "train.max_grad_norm=.inf"), "train.max_grad_norm: got inf, must be a finite", "1 problem"


@case
def case_train_max_steps_zero(t):
    return train(t, "train.max_steps=0"), "train.max_steps: got 0, which trains nothing", "use -1"


@case
def case_train_nproc_zero(t):
    return train(t, "--nproc", "0"), "distributed.nproc: got 0, must be >= 1", "1 problem"


@case
def case_train_master_port_out_of_range(t):
    return train(t, "--master-port", "70000"), "distributed.master_port: got 70000, must be <= 65535", "1 problem"


@case
def case_train_config_is_a_directory(t):
    return ["train", str(t.run)], f"{t.run}: is a directory, expected a YAML config file", "pass the path of a YAML"


# ---------------------------------------------------------------- the runner

@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_clear_message_and_writes_nothing(name, tmp_path, capsys, monkeypatch):
    run_case(CASES[name], tmp_path, capsys, monkeypatch)


def test_docs_table_lists_every_case():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    assert [name for name in CASES if f"`{name}`" not in doc] == []
