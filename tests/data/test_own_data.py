"""A user's own data out of the box: the held-out test split (size rule, never trained on or
validated on, scored base vs tuned), the split warnings, config-relative data paths,
`lmtune train --data FILE` without a YAML, and `lmtune advise` writing configs that run as written."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from lmtune.cli import main
from lmtune.config import load_config
from lmtune.data import prepare_datasets
from lmtune.data.holdout import HELDOUT_FILE, heldout_size, hold_out
from tiny_models import build_tokenizer, save_tiny_model, write_alpaca


def _chat(path, n, start=0):
    rows = [{"messages": [{"role": "user", "content": f"code {i}"},
                          {"role": "assistant", "content": f"c{i % 7}"}]} for i in range(start, start + n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("n, size", [(5, 0), (9, 0), (10, 2), (60, 12), (100, 20), (500, 50),
                                     (1000, 100), (5000, 200)])
def test_test_size_rule(n, size):
    assert heldout_size(n) == size


def test_configured_test_size_wins():
    assert (heldout_size(60, 0), heldout_size(60, 30), heldout_size(5, 30)) == (0, 30, 4)


def _prepare(tmp_path, n, *overrides, tokenizer=None):
    data = _chat(tmp_path / "train.jsonl", n)
    cfg = load_config(None, [f"data.train={data}", "data.template=chatml", *overrides])
    return prepare_datasets(cfg.data, tokenizer or build_tokenizer())


def test_heldout_split_is_seeded_and_never_trained_or_validated_on(tmp_path):
    tok = build_tokenizer()
    prep = _prepare(tmp_path, 200, "data.val_split=0.1", tokenizer=tok)
    held = {ex.content_key() for ex in prep.test_examples}
    assert len(held) == 20 and prep.stats["test_split"] == {"held_out": 20, "of": 200, "seed": 42}
    decoded = {tok.decode(ids) for split in (prep.train, prep.validation) for ids in split["input_ids"]}
    # no held-out prompt appears in any tokenized training or validation row
    for ex in prep.test_examples:
        assert not any(f"{ex.messages[0]['content']}<" in text for text in decoded)
    assert len(prep.train) + len(prep.validation) == 180
    again = _prepare(tmp_path, 200, "data.val_split=0.1", tokenizer=tok)
    assert {ex.content_key() for ex in again.test_examples} == held       # same seed, same split
    other = _prepare(tmp_path, 200, "data.val_split=0.1", "data.seed=7", tokenizer=tok)
    assert {ex.content_key() for ex in other.test_examples} != held


def test_no_heldout_split_with_test_files_or_a_task(tmp_path):
    test = _chat(tmp_path / "test.jsonl", 30, start=1000)
    prep = _prepare(tmp_path, 100, f"data.test={test}")
    assert prep.test_examples == [] and "test_split" not in prep.stats
    train, held = hold_out(list(range(10)), 0, 1)
    assert (train, held) == (list(range(10)), [])


def test_small_and_overlapping_splits_warn(tmp_path):
    warnings = _prepare(tmp_path, 60).stats["warnings"]
    assert any("validation split has 2 examples (< 20)" in w for w in warnings)
    assert any("test split has 12 examples (< 20)" in w for w in warnings)
    overlap = _chat(tmp_path / "test.jsonl", 25, start=50)    # prompts 50..74: 10 are in train
    warnings = _prepare(tmp_path, 60, f"data.test={overlap}").stats["warnings"]
    assert any(w.startswith("10 of 25 test prompts also appear in the training data") for w in warnings)
    cfg = load_config(None, ["data.task=json", f"data.train={tmp_path / 'train.jsonl'}"])
    warnings = prepare_datasets(cfg.data, build_tokenizer()).stats["warnings"]
    assert any("data.task=json and data.train are both set" in w for w in warnings)
    assert not any("test split" in w for w in _prepare(tmp_path, 400).stats["warnings"])


def test_relative_data_paths_resolve_against_the_config_folder(tmp_path, monkeypatch):
    (tmp_path / "project" / "data").mkdir(parents=True)
    (tmp_path / "project" / "configs").mkdir()
    train = _chat(tmp_path / "project" / "data" / "train.jsonl", 20)
    config = tmp_path / "project" / "configs" / "run.yaml"
    config.write_text("data:\n  train: ../data/train.jsonl\n  test: [../data/test.jsonl, /abs/t.jsonl]\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(config, ["data.validation=val.jsonl"])
    assert cfg.data.train == [str(train)]
    assert cfg.data.test == [str(tmp_path / "project" / "data" / "test.jsonl"), "/abs/t.jsonl"]
    assert cfg.data.validation == [str(elsewhere / "val.jsonl")]   # command line: the working directory
    monkeypatch.chdir(tmp_path / "project")
    assert load_config("configs/run.yaml").data.train == [str(train)]


def test_train_data_without_yaml_scores_a_heldout_split(tmp_path, capsys):
    model_dir = save_tiny_model(tmp_path / "base", "llama")
    data = write_alpaca(tmp_path / "train.jsonl", 60)
    run = tmp_path / "run"
    code = main(["train", "--data", str(data), f"model.name_or_path={model_dir}", f"output.dir={run}",
                 "train.max_steps=2", "data.max_length=96", "eval.max_new_tokens=4",
                 "eval.forgetting_check=false", "train.save_steps=1000", "train.load_best=false"])
    assert code == 0
    out = capsys.readouterr()
    assert "warning: the test split has 12 examples" in out.err
    ev = json.loads((run / "eval.json").read_text())
    task = ev["task"]
    assert task["examples"] == 12 and HELDOUT_FILE in task["source"] and "never trained on" in task["source"]
    assert set(task["tuned"]) == set(task["base"]) == {"exact_match", "rouge_l"}
    assert len(ev["samples"]) == 5 and "base" in ev["samples"][0]
    held = [json.loads(x) for x in (run / HELDOUT_FILE).read_text().splitlines()]
    trained_on = json.loads((run / "data_stats.json").read_text())["examples"]
    assert len(held) == 12 and sum(trained_on.values()) == 48
    report = (run / "report.html").read_text()
    assert HELDOUT_FILE in report and ev["samples"][0]["prompt"] in report   # sample answers shown
    assert "<li>warning: the test split has 12 examples" in report
    # the printed config is a YAML that runs as written: resolved numbers, no auto
    printed = out.out.split("and run `lmtune train FILE`:", 1)[1].split("run directory:")[0]
    saved = tmp_path / "saved.yaml"
    saved.write_text(printed)
    cfg = load_config(saved)
    assert cfg.data.train == [str(data)] and cfg.model.name_or_path == str(model_dir)
    assert isinstance(cfg.train.learning_rate, float) and isinstance(cfg.train.epochs, float)
    # `lmtune eval RUN` scores the same held-out split again
    assert main(["eval", str(run), "--no-forgetting"]) == 0
    assert json.loads((run / "eval.json").read_text())["task"]["examples"] == 12


def test_train_needs_a_config_or_data(capsys):
    assert main(["train"]) == 2
    assert "give a config file or --data FILE" in capsys.readouterr().err


def _advise(tmp_path, out, *extra):
    return main(["advise", "--model", "tiny", "--gpu", "cpu", "--examples", "2000", "--yes",
                 "--out", str(out), *extra])


def test_advise_never_overwrites_without_force(tmp_path, capsys):
    out = tmp_path / "advised.yaml"
    out.write_text("# mine\n")
    assert _advise(tmp_path, out) == 2
    assert "already exists" in capsys.readouterr().err and out.read_text() == "# mine\n"
    assert _advise(tmp_path, out, "--force") == 0
    assert load_config(out).method == "lora"


def test_advise_writes_paths_and_batch_that_train_uses(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _chat(tmp_path / "mine.jsonl", 1200)
    out = tmp_path / "sub" / "advised.yaml"
    out.parent.mkdir()
    assert main(["advise", "--model", "tiny", "--gpu", "cpu", "--data", "mine.jsonl", "--yes",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "train.learning_rate: auto -> 1.0e-03" in printed and "train.epochs: auto ->" in printed
    text = out.read_text()
    assert "learning_rate: auto  # now: 1.0e-03" in text
    monkeypatch.chdir(out.parent)   # the file works from another folder: the data path is absolute
    cfg = load_config("advised.yaml")
    assert cfg.data.train == [str(tmp_path / "mine.jsonl")] and os.path.isabs(cfg.data.train[0])
    # the per-device batch `lmtune train` picks on a CPU, with its grad_accum
    assert (cfg.train.batch_size, cfg.train.grad_accum) == (cfg.train.micro_batch("cpu"), 4) == (1, 4)
    assert yaml.safe_load(text)["train"]["epochs"] == "auto"
