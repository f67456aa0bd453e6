"""The scale pipeline (lmtune/data/arrow_pipeline.py) against the list-based one it replaced
(tests/helpers/data_reference.py: every example an object, tokenized one at a time by tokenize_example):
identical input_ids, completion_mask, TRL packing, held-out test and data_stats.json on the
bundled tasks and every template; the cache hits on a rerun and misses when an input changes;
bad records are still reported with file:line through the streamed, parallel scan."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from data_reference import _overlap_mask, assert_same_prepared, reference_prepare

from lmtune.config import from_dict
from lmtune.data import cache, prepare_datasets, stream
from lmtune.data.records import scan
from lmtune.data.templates import GENERATION_MARKER, ModelTemplate
from lmtune.data.tokenize_batch import overlap_masks
from lmtune.errors import DataError
from lmtune.models import open_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return open_tokenizer("tiny")


def _cfg(**data):
    return from_dict({"model": {"name_or_path": "tiny"}, "data": data}).data


@pytest.mark.parametrize("task,template", [("sql", "auto"), ("json", "auto")])   # alpaca: below
def test_bundled_tasks_identical_to_the_list_pipeline(tokenizer, task, template, monkeypatch):
    from lmtune.train.hparams import _row_lengths

    from lmtune.data import records

    if task == "json":
        monkeypatch.setattr(records, "MEMORY_BYTES", -1)   # the records through an Arrow file
    cfg = _cfg(task=task, template=template, cache=False)
    new, ref = prepare_datasets(cfg, tokenizer), reference_prepare(cfg, tokenizer)
    assert_same_prepared(new, ref, cfg.max_length)
    assert _row_lengths(new.train) == [len(ids) for ids in ref.train["input_ids"]]   # hparams' sizes


def _chat_file(path, n=300, seed=0):
    """Multi-turn conversations with systems, duplicates up to whitespace, a prompt with two
    answers, unicode and long answers that max_length truncates."""
    rng = random.Random(seed)
    words = "select count from where join order year ünïcode 数据 total price city".split()
    rows = []
    for i in range(n):
        turns = [{"role": "system", "content": "Be brief."}] if i % 3 == 0 else []
        for t in range(1 + i % 3):
            turns.append({"role": "user", "content": f"q{i}.{t} " + " ".join(rng.choices(words, k=6))})
            turns.append({"role": "assistant", "content": " ".join(rng.choices(words, k=rng.randint(1, 40)))})
        rows.append({"messages": turns})
    rows.append({"messages": [dict(m, content=m["content"] + "  ") for m in rows[5]["messages"]]})  # duplicate
    rows.append({"messages": rows[7]["messages"][:-1] + [{"role": "assistant", "content": "other"}]})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _no_markers(tokenizer):
    return ModelTemplate(tokenizer, chat_template=GENERATION_MARKER.sub("", tokenizer.get_chat_template())
                         .replace("{%- endgeneration -%}", ""))


@pytest.mark.parametrize("template", ["chatml", "model", "model-no-markers"])
@pytest.mark.parametrize("max_length,train_on_prompt", [(48, False), (512, True)])
def test_templates_identical_to_the_list_pipeline(tokenizer, tmp_path, template, max_length, train_on_prompt):
    path = _chat_file(tmp_path / "chat.jsonl")
    explicit = _no_markers(tokenizer) if template == "model-no-markers" else None
    cfg = _cfg(train=[str(path)], template="model" if explicit else template, max_length=max_length,
               train_on_prompt=train_on_prompt, cache=False)
    new, ref = prepare_datasets(cfg, tokenizer, explicit), reference_prepare(cfg, tokenizer, explicit)
    assert ref.stats["tokens"]["train"]["truncated"] or max_length > 48   # the case is exercised
    assert_same_prepared(new, ref, max_length)


@pytest.mark.parametrize("files", [("val", "test"), ()])
@pytest.mark.parametrize("settings", [{}, {"dedupe": False, "val_split": 0.0, "test_size": 5, "seed": 3}])
def test_alpaca_with_files_and_settings(tokenizer, tmp_path, files, settings):
    rows = [{"instruction": f"Q {i % 150}", "input": "x" * (i % 3), "output": f"A {i % 140}"} for i in range(400)]
    for name, part in (("train", rows[:300]), ("val", rows[250:350]), ("test", rows[340:])):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    given = {"validation" if f == "val" else f: [str(tmp_path / f"{f}.jsonl")] for f in files}
    cfg = _cfg(train=[str(tmp_path / "train.jsonl")], template="alpaca", cache=False, **given, **settings)
    new, ref = prepare_datasets(cfg, tokenizer), reference_prepare(cfg, tokenizer)
    assert ref.stats["conflicting_prompts"] and (ref.stats.get("validation_in_train_removed") or not files)
    assert_same_prepared(new, ref, cfg.max_length)


def test_batched_masks_follow_both_per_example_rules():
    rng = random.Random(1)
    offsets, spans, lengths = [], [], []
    for _ in range(200):
        n, pos, offs = rng.randint(0, 30), 0, []
        for _ in range(n):
            width = rng.choice([0, 0, 1, 2, 3])
            start = pos if rng.random() > 0.1 else max(0, pos - 2)    # overlapping, empty tokens too
            offs.append((start, start + width))
            pos = max(pos, start + width)
        cuts = sorted(rng.sample(range(pos + 2), min((pos + 2) // 2 * 2, 2 * rng.randint(0, 3))))
        offsets.append(offs)
        spans.append([(cuts[i], cuts[i + 1]) for i in range(0, len(cuts), 2) if cuts[i] < cuts[i + 1]])
        lengths.append(pos)

    def transformers_rule(offs, sp):   # transformers 5, apply_chat_template's assistant_masks loop
        mask, s = [0] * len(offs), 0
        for i, (start, end) in enumerate(offs):
            while s < len(sp) and start >= sp[s][1]:
                s += 1
            if s == len(sp):
                break
            if end > sp[s][0]:
                mask[i] = 1
        return mask

    assert overlap_masks(offsets, spans, lengths, nonempty=True) == [
        _overlap_mask(o, s) for o, s in zip(offsets, spans)]
    assert overlap_masks(offsets, spans, lengths, nonempty=False) == [
        transformers_rule(o, s) for o, s in zip(offsets, spans)]


def test_cache_hits_on_rerun_and_misses_when_an_input_changes(tokenizer, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(tmp_path / "cache"))
    path = _chat_file(tmp_path / "chat.jsonl", n=60)
    cfg = _cfg(train=[str(path)], max_length=64)
    first = prepare_datasets(cfg, tokenizer)
    assert "reused from the cache" not in capsys.readouterr().err
    again = prepare_datasets(cfg, tokenizer)
    assert "reused from the cache" in capsys.readouterr().err
    assert again.train.to_dict() == first.train.to_dict() and again.stats == first.stats
    assert len(cache.entries()) == 1
    key = cache.data_key(cfg, {"train": [str(path)], "validation": [], "test": []}, tokenizer, None)
    assert cache.lookup(key) is not None

    def misses(cfg, tok=tokenizer, template=None):
        before = len(cache.entries())
        prepare_datasets(cfg, tok, template)
        return "reused from the cache" not in capsys.readouterr().err and len(cache.entries()) == before + 1

    assert misses(_cfg(train=[str(path)], max_length=65))
    assert misses(_cfg(train=[str(path)], max_length=64, template="chatml"))
    assert misses(cfg, template=_no_markers(tokenizer))
    other = open_tokenizer("tiny")
    other.add_tokens(["<new_token>"])
    assert misses(cfg, tok=other)
    path.write_text(path.read_text() + json.dumps({"messages": [{"role": "user", "content": "x"},
                                                               {"role": "assistant", "content": "y"}]}) + "\n")
    assert misses(cfg)
    no_cache = prepare_datasets(_cfg(train=[str(path)], max_length=64, cache=False), tokenizer)
    assert "reused" not in capsys.readouterr().err and len(no_cache.train) == len(prepare_datasets(cfg, tokenizer).train)


@pytest.mark.parametrize("arrow", [False, True])
def test_bad_records_reported_with_file_and_line_through_blocks_and_workers(tokenizer, tmp_path, monkeypatch,
                                                                            capsys, arrow):
    from lmtune.data import records

    monkeypatch.setattr(records, "MEMORY_BYTES", -1 if arrow else 1 << 30)   # records on disk or in memory
    rows = [json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(3000)]
    rows[10] = '{"instruction": "q", "output": ""}'
    rows[1500] = '{"instruction": "q", "output": 3'
    rows[2999] = '{"text": "a text record"}'
    path = tmp_path / "data.jsonl"
    path.write_bytes(("\n".join(rows[:2000]) + "\n\n" + "\n".join(rows[2000:]) + "\n").encode()
                     + b'{"instruction": "\xff", "output": "x"}\n')
    monkeypatch.setattr(stream, "BLOCK_BYTES", 4096)            # many blocks, line numbers carried over
    one, two = scan([str(path)], "auto", tmp_path / "a.arrow", procs=1), scan([str(path)], "auto", tmp_path / "b.arrow", procs=2)
    assert one.problems == two.problems and np.array_equal(one.keys, two.keys) and one.records == 3001
    from data_reference import load_examples

    assert one.problems == load_examples([str(path)]).problems
    assert [p.split(": ")[0] for p in one.problems] == [f"{path}:{n}" for n in (11, 1501, 3001, 3002)]
    with pytest.raises(DataError) as err:
        prepare_datasets(_cfg(train=[str(path)], cache=False), tokenizer)
    assert err.value.problems == one.problems
    from lmtune.cli import main

    monkeypatch.setattr(records, "BLOCK_BYTES", 4096)             # the CLI's scan in two processes too
    assert main(["data", "check", str(path)]) == 2
    shown = capsys.readouterr().err
    assert all(f"  {p}" in shown for p in one.problems)


def test_cache_clear_removes_only_lmtune_entries_and_an_unwritable_cache_is_skipped(tokenizer, tmp_path,
                                                                                    monkeypatch, capsys):
    from lmtune.cli import main

    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(tmp_path / "cache"))
    path = _chat_file(tmp_path / "chat.jsonl", n=30)
    prepare_datasets(_cfg(train=[str(path)]), tokenizer)
    foreign = cache.cache_root() / "not-lmtune"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    assert main(["data", "cache"]) == 0 and "1 entries" in capsys.readouterr().out
    assert main(["data", "cache", "--clear"]) == 0
    assert cache.entries() == [] and (foreign / "keep.txt").read_text() == "mine"
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(blocker))           # cannot hold a directory
    data = prepare_datasets(_cfg(train=[str(path)]), tokenizer)
    assert len(data.train) and "not writable" in capsys.readouterr().err


def test_parquet_streams_by_row_group_with_the_same_rows_and_problems(tokenizer, tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from data_reference import load_examples

    monkeypatch.setattr(stream, "BATCH", 7)
    rows = {"instruction": [f"q{i}" for i in range(50)], "output": [f"a{i % 20}" if i != 33 else " " for i in range(50)]}
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table(rows), path, row_group_size=16)
    split = scan([str(path)], "auto", tmp_path / "r.arrow", procs=1)
    ref = load_examples([str(path)])
    assert split.problems == ref.problems == [f"{path}:row 33: empty string (output)"]
    assert split.examples(np.arange(len(split))) == ref.examples and split.records == ref.records == 50


def test_a_directory_of_jsonl_csv_and_json_array_files(tokenizer, tmp_path):
    import csv

    folder = tmp_path / "data"
    folder.mkdir()
    rows = [{"prompt": f"p{i} ", "completion": f"c{i % 9}"} for i in range(90)]
    (folder / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:30]))
    with (folder / "b.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["prompt", "completion"])
        writer.writeheader()
        writer.writerows(rows[30:60])
    (folder / "c.json").write_text(json.dumps(rows[55:90]))
    cfg = _cfg(train=[str(folder)], cache=False)
    new, ref = prepare_datasets(cfg, tokenizer), reference_prepare(cfg, tokenizer)
    assert ref.stats["duplicates_removed"]["train"] == 5 and ref.template.name == "raw"
    assert_same_prepared(new, ref, cfg.max_length)
