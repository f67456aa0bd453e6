"""Config messages kept across the move to pydantic: each of pydantic's error kinds becomes the line
users saw before (the key as typed, what was given, what is allowed), in the order the keys were written."""

import dataclasses

import pytest

from lmtune.cli import main
from lmtune.config import Config, explain, from_dict, load_config
from lmtune.errors import ConfigError

SQL = {"data": {"task": "sql"}}


def _problems(raw: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        from_dict(raw, "f.yaml")
    return info.value.problems


def _with(section: str, values: dict) -> dict:
    return {**SQL, section: values} if section != "data" else {"data": {"task": "sql", **values}}


@pytest.mark.parametrize("section, values, message", [
    # strict types: no casting of "3", 2.0, 1 or "yes"
    ("lora", {"r": "3"}, "lora.r: got '3' (str), expected an integer"),
    ("lora", {"r": 2.0}, "lora.r: got 2.0 (float), expected an integer"),
    ("lora", {"r": True}, "lora.r: got True (bool), expected an integer"),
    ("data", {"packing": 1}, "data.packing: got 1 (int), expected true/false"),
    ("model", {"name_or_path": None}, "model.name_or_path: got None (NoneType), expected a string"),
    ("model", {"revision": 3}, "model.revision: got 3 (int), expected a string"),
    ("lora", {"dropout": "abc"}, "lora.dropout: got 'abc' (str), expected a number"),
    ("lora", {"target_modules": ["a", 1]},
     "lora.target_modules: got ['a', 1] (list), expected a list of strings or a string"),
    # ranges, shown on the number as read (an integer or a numeric string in a float field is a float)
    ("lora", {"dropout": 1}, "lora.dropout: got 1.0, must be <= 0.9"),
    ("data", {"val_split": -0.1}, "data.val_split: got -0.1, must be >= 0.0"),
    ("train", {"epochs": 0}, "train.epochs: got 0.0, must be > 0.0"),
    ("train", {"epochs": "-2"}, "train.epochs: got -2.0, must be > 0.0"),
    ("train", {"learning_rate": 0}, "train.learning_rate: got 0.0, must be > 0.0"),
    ("train", {"batch_size": 0}, "train.batch_size: got 0, must be >= 1"),
    ("data", {"test_size": -1}, "data.test_size: got -1, must be >= 0"),
    ("distributed", {"master_port": 70000}, "distributed.master_port: got 70000, must be <= 65535"),
    ("distributed", {"nproc": 0}, "distributed.nproc: got 0, must be >= 1"),
    ("train", {"learning_rate": "inf"}, "train.learning_rate: got inf, must be a finite number"),
    ("train", {"epochs": float("nan")}, "train.epochs: got nan, must be a finite number"),
    # the word auto, and the other types of a number-or-auto key
    ("train", {"epochs": "Auto"}, "train.epochs: got 'Auto' (str), expected a number or auto"),
    ("train", {"epochs": None}, "train.epochs: got None (NoneType), expected a number or a string"),
    ("train", {"learning_rate": [1]}, "train.learning_rate: got [1] (list), expected a number or a string"),
    ("distributed", {"nproc": 2.0}, "distributed.nproc: got 2.0 (float), expected an integer or a string"),
    ("distributed", {"nproc": "4"}, "distributed.nproc: got '4', expected a number >= 1 or auto"),
    # choices: a string outside them, or not a string at all
    ("lora", {"bias": "x"}, "lora.bias: got 'x', allowed: none, all, lora_only"),
    ("lora", {"bias": 3}, "lora.bias: got 3 (int), expected a string"),
    ("model", {"dtype": None}, "model.dtype: got None (NoneType), expected a string"),
    ("data", {"task": "poetry"}, "data.task: got 'poetry', allowed: null, sql, json, catalogue"),
    # unknown keys and sections that are not mappings, at any depth
    ("lora", {"zzzzz": 1},
     "lora.zzzzz: unknown key; allowed: r, alpha, dropout, target_modules, bias, use_dora, use_rslora"),
    ("lora", {2: 3}, "lora.2: unknown key; allowed: r, alpha, dropout, target_modules, bias, use_dora, use_rslora"),
    ("data", {"replay": {"ration": 1}},
     "data.replay.ration: unknown key (did you mean 'data.replay.ratio'?); allowed: ratio, source, max_new_tokens"),
    ("data", {"replay": "x"}, "data.replay: expected a mapping of keys, got 'x'"),
])
def test_one_line_per_bad_key(section, values, message):
    assert _problems(_with(section, values)) == [message]


def test_problems_come_in_the_order_written():
    raw = {"eval": {"few_shot": -1, "max_new_tokens": 0}, "data": {"format": "xml", "task": "bad"},
           "lora": {"bias": 5, "r": 0}, "methd": "x", "train": 3}
    assert _problems(raw) == [
        "eval.few_shot: got -1, must be >= 0", "eval.max_new_tokens: got 0, must be >= 1",
        "data.format: got 'xml', allowed: auto, alpaca, chat, prompt_completion, text",
        "data.task: got 'bad', allowed: null, sql, json, catalogue",
        "lora.bias: got 5 (int), expected a string", "lora.r: got 0, must be >= 1",
        "methd: unknown key (did you mean 'method'?); allowed: model, data, method, lora, quant, train, pref, rl, eval, "
        "distributed, output, rag",
        "train: expected a mapping of keys, got 3"]
    assert _problems([1]) == ["config: expected a mapping of keys, got [1]"]


def test_values_are_read_as_before():
    cfg = from_dict({"data": {"train": "a.jsonl", "validation": "v.jsonl", "replay": None}, "lora": None,
                     "train": {"epochs": "2", "learning_rate": None}, "eval": {"forgetting_warn": 2},
                     "distributed": {"nproc": "auto"}})
    assert cfg.data.train == ["a.jsonl"] and cfg.data.validation == ["v.jsonl"]   # one file: a list of one
    assert cfg.data.replay == Config().data.replay and cfg.lora == Config().lora    # `section:` alone: defaults
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float) and cfg.train.learning_rate is None
    assert cfg.eval.forgetting_warn == 2.0 and isinstance(cfg.eval.forgetting_warn, float)
    assert cfg.distributed.nproc == "auto"


def test_sections_stay_dataclasses():
    cfg = load_config(None, ["data.task=sql", "lora.r=8"])
    assert dataclasses.asdict(cfg)["lora"]["r"] == 8 and cfg.to_dict() == dataclasses.asdict(cfg)
    assert dataclasses.replace(cfg, method="full").method == "full"
    assert dataclasses.replace(cfg.eval, after_train=False).after_train is False


def test_explain_docs_are_the_field_descriptions():
    rows = {key: (default, doc) for key, default, doc in explain()}
    assert rows["lora.r"] == ("16", "LoRA rank")
    assert rows["data.train"] == ("[]", "training files or directories (jsonl, json, csv, parquet)")
    assert rows["data.replay.max_new_tokens"] == ("96", "source self: tokens generated per answer")
    assert [k for k, (_, doc) in rows.items() if not doc] == []
    assert "data.replay" not in rows and "lora" not in rows   # sections are not keys


def test_file_errors_name_the_file_and_exit_2(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  task: sql\nlora:\n  r: 0\n  alhpa: 8\n")
    assert main(["config", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [f"error: {path}: 2 problems in the configuration", "  lora.r: got 0, must be >= 1",
                                "  lora.alhpa: unknown key (did you mean 'lora.alpha'?); allowed: r, alpha, dropout, "
                                "target_modules, bias, use_dora, use_rslora"]
