"""Readers (sources per file type), dedupe and split, prepare_datasets, and the torch-free
tokenizer path of `lmtune data check --model`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tiny_tokenizers as tt
from data_reference import dedupe
from lmtune.config import DataConfig
from lmtune.data import prepare_datasets, split_train_validation
from data_reference import load_examples
from lmtune.errors import DataError

ROOT = Path(__file__).resolve().parents[2]
ALPACA_FILE = str(ROOT / "examples/data/alpaca.jsonl")


def _write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_sources_per_file_type(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.csv").write_text('instruction,input,output\n"two\nlines",,x\nq,,y\n')
    (tmp_path / "b.json").write_text(json.dumps([{"text": "t"}, {"text": "u"}]))
    (tmp_path / "c.jsonl").write_text('\n{"text": "v"}\n')
    pq.write_table(pa.table({"prompt": ["p"], "completion": ["c"]}), tmp_path / "d.parquet")
    sources = {ex.source: ex.format for f in ("a.csv", "b.json", "c.jsonl", "d.parquet")
               for ex in load_examples([str(tmp_path / f)]).examples}
    assert sources == {f"{tmp_path}/a.csv:2": "alpaca", f"{tmp_path}/a.csv:4": "alpaca",
                       f"{tmp_path}/b.json:item 0": "text", f"{tmp_path}/b.json:item 1": "text",
                       f"{tmp_path}/c.jsonl:2": "text", f"{tmp_path}/d.parquet:row 0": "prompt_completion"}


def test_directory_is_read_sorted_and_recursively(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / ".hidden").mkdir()
    for path in (tmp_path / "b.jsonl", tmp_path / "sub" / "a.jsonl", tmp_path / ".hidden" / "x.jsonl"):
        _write_jsonl(path, [{"text": path.name}])
    (tmp_path / "README.md").write_text("not data")
    loaded = load_examples([str(tmp_path)])
    assert [ex.source for ex in loaded.examples] == [f"{tmp_path}/b.jsonl:1", f"{tmp_path}/sub/a.jsonl:1"]
    assert loaded.problems == []


def test_sharegpt_and_csv_json_cells_become_messages(tmp_path):
    path = _write_jsonl(tmp_path / "s.jsonl", [{"conversations": [
        {"from": "system", "value": "S"}, {"from": "human", "value": "H"}, {"from": "gpt", "value": "G"}]}])
    [ex] = load_examples([path]).examples
    assert ex.messages == [{"role": "system", "content": "S"}, {"role": "user", "content": "H"},
                           {"role": "assistant", "content": "G"}]
    cell = json.dumps([{"role": "user", "content": "H"}, {"role": "assistant", "content": "G"}])
    (tmp_path / "c.csv").write_text('messages\n"' + cell.replace('"', '""') + '"\n')  # CSV quoting
    [ex] = load_examples([str(tmp_path / "c.csv")]).examples
    assert ex.response == "G" and ex.prompt_messages() == [{"role": "user", "content": "H"}]


def test_dedupe_is_exact_up_to_whitespace_and_split_is_seeded(tmp_path):
    records = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(20)]
    records += [{"instruction": "q3", "output": "a3"}, {"instruction": " q4", "output": "a4  "},
                {"instruction": "q5", "output": "A5"}]  # case differs: not a duplicate
    examples = load_examples([_write_jsonl(tmp_path / "d.jsonl", records)]).examples
    result = dedupe(examples)
    assert result.removed == 2 and len(result.kept) == 21
    train, val = split_train_validation(result.kept, 0.2, seed=7)
    again_train, again_val = split_train_validation(result.kept, 0.2, seed=7)
    _, other_val = split_train_validation(result.kept, 0.2, seed=8)
    assert (len(train), len(val)) == (17, 4)
    assert [e.source for e in val] == [e.source for e in again_val]
    assert [e.source for e in val] != [e.source for e in other_val]
    assert not {e.source for e in train} & {e.source for e in val}


def test_prepare_datasets_returns_trl_ready_columns_and_stats(tmp_path):
    tokenizer = tt.gpt2_style()
    cfg = DataConfig(train=[ALPACA_FILE], val_split=0.2, seed=3, max_length=256)
    data = prepare_datasets(cfg, tokenizer)
    assert data.train.column_names == ["input_ids", "completion_mask"]
    # 16 records - 2 duplicates = 14; 2 held out as the test split (data/holdout.py), 20% of 12 validate
    assert (len(data.train), len(data.validation), len(data.test_examples)) == (10, 2, 2)
    s = data.stats
    assert (s["format"], s["template"], s["duplicates_removed"]) == ("alpaca", "alpaca", {"train": 2})
    tokens = s["tokens"]["train"]
    assert tokens["length_min"] <= tokens["length_median"] <= tokens["length_p95"] <= tokens["length_max"]
    assert 0 < tokens["trained_share"] < 1 and tokens["truncated"] == 0
    row = data.train[0]
    assert len(row["input_ids"]) == len(row["completion_mask"]) and row["input_ids"][-1] == tokenizer.eos_token_id
    json.dumps(s)  # the run writes it as data_stats.json


def test_prepare_datasets_validation_file_and_errors(tmp_path):
    tokenizer = tt.qwen_style()
    val = _write_jsonl(tmp_path / "val.jsonl", [
        {"instruction": "Give the capital of the country.", "input": "Portugal", "output": "Lisbon"},  # in train
        {"instruction": "Give the capital of the country.", "input": "Norway", "output": "Oslo"}])
    data = prepare_datasets(DataConfig(train=[ALPACA_FILE], validation=[val]), tokenizer)
    assert data.template.name == "model" and len(data.validation) == 1
    assert data.stats["validation_in_train_removed"] == 1
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"instruction": "x"}, {"instruction": "y", "output": 3}])
    with pytest.raises(DataError) as info:
        prepare_datasets(DataConfig(train=[bad]), tokenizer)
    assert info.value.problems == [f"{bad}:1: missing field (output)",
                                   f"{bad}:2: expected a string, got a number (output)"]
    chat = _write_jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "a"},
                                                                {"role": "assistant", "content": "b"}]}])
    with pytest.raises(DataError, match="different formats"):
        prepare_datasets(DataConfig(train=[ALPACA_FILE], validation=[chat]), tokenizer)


def test_bundled_task_files_resolve(tmp_path):
    tasks = pytest.importorskip("lmtune.tasks")
    if not hasattr(tasks, "task_files"):
        pytest.skip("lmtune.tasks.task_files is not built yet")
    from lmtune.data import resolve_files

    files = resolve_files(DataConfig(task="sql"))
    assert files["train"] and Path(files["train"][0]).is_file()


def test_data_check_with_a_saved_tokenizer_imports_no_torch(tmp_path):
    """--model DIR loads the tokenizer class named in tokenizer_config.json without torch."""
    model_dir = tmp_path / "model"
    tt.marked_style().save_pretrained(model_dir)
    code = ("import sys; from lmtune.cli import main; rc = main(sys.argv[1:]); "
            "print('TORCH', 'torch' in sys.modules); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "data", "check", str(ROOT / "examples/data/chat.jsonl"),
                           "--model", str(model_dir), "--max-length", "24"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "TORCH False" in out
    assert "template    model" in out and "tokens (tokenizer" in out
    assert "truncated   " in out and "trained     " in out
    # chat.jsonl:1 is longer than 24 tokens even without its answer: dropped, so the sample is line 2
    assert "[[144.<|end|>]]" in out and "sample" in out and "chat.jsonl:2" in out


def test_light_tokenizer_loader_matches_the_saved_tokenizer(tmp_path):
    from lmtune.models import open_tokenizer as load_tokenizer

    original = tt.qwen_style()
    original.save_pretrained(tmp_path / "tok")
    loaded = load_tokenizer(str(tmp_path / "tok"))
    text = "<|im_start|>user\nSELECT name FROM customers;<|im_end|>"
    assert loaded(text)["input_ids"] == original(text)["input_ids"]
    assert (loaded.eos_token, loaded.pad_token) == ("<|im_end|>", "<|endoftext|>")
    assert loaded.chat_template == original.chat_template
    from lmtune.errors import UserError

    with pytest.raises(UserError, match="model directory not found"):
        load_tokenizer(str(tmp_path / "no-such-model"))
