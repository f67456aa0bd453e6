"""arrow_pipeline.py, token_shards.py and prepare.py on small real files: the Arrow pipeline equals the list-based reference
(tests/helpers/data_reference.py) on small real files, its position arithmetic (dedupe, duplicates,
conflicting prompts, held-out test), the cache's paths, the shard files and their counts, and the
messages of prepare.py. Tiny tokenizers trained in milliseconds; files under tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from data_reference import assert_same_prepared, reference_prepare, tokenize_examples

import tiny_tokenizers as tt
from lmtune.config import DataConfig
from lmtune.data import arrow_pipeline, cache, token_shards
from lmtune.data.arrow_pipeline import (
    conflicting_prompts,
    dedupe_positions,
    first_duplicates,
    prepare_arrow,
    scan_split,
)
from lmtune.data.formats import LoadedData
from lmtune.data.prepare import load_split, prepare_datasets, problem_summary, resolve_files, summary_line
from lmtune.data.records import scan
from lmtune.data.templates import get_template
from lmtune.data.token_shards import ShardResult, _Writer, load_shards, num_proc, tokenize_to_arrow
from lmtune.errors import DataError


def _jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _alpaca_rows(n: int, offset: int = 0) -> list[dict]:
    """Duplicates (i % 17), prompts with two answers (i % 13 vs i % 11) and long answers."""
    return [{"instruction": f"Q {(i + offset) % 17}", "input": "x" * (i % 3),
             "output": f"A {(i + offset) % 13} " + "lazy dog " * (i % 5)} for i in range(n)]


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(tmp_path / "cache"))


SETTINGS = {
    "defaults": {},
    "files": {"validation": "val", "test": "test"},
    "val-file-no-dedupe": {"validation": "val", "dedupe": False, "max_length": 30},
    "no-split": {"dedupe": False, "val_split": 0.0, "test_size": 4, "seed": 3},
    "seeded": {"val_split": 0.2, "test_size": 0, "seed": 7, "train_on_prompt": True},
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_alpaca_equals_the_list_pipeline(tmp_path, name):
    settings = dict(SETTINGS[name])
    rows = _alpaca_rows(90)
    train = _jsonl(tmp_path / "train.jsonl", rows[:70])
    for key in ("validation", "test"):
        if key in settings:   # overlaps train by a few examples
            part = rows[60:75] + rows[60:62] if key == "validation" else rows[75:]   # with 2 duplicates
            settings[key] = [_jsonl(tmp_path / f"{key}.jsonl", part)]
    cfg = DataConfig(train=[train], template="alpaca", cache=False, **settings)
    tokenizer = tt.gpt2_style()
    new, ref = prepare_datasets(cfg, tokenizer), reference_prepare(cfg, tokenizer)
    assert ref.stats["conflicting_prompts"] and ref.stats["warnings"] is not None
    if "validation" in settings:
        assert ref.stats["duplicates_removed"]["validation"] == (2 if settings.get("dedupe", True) else 0)
    if "max_length" in settings:   # truncation and dropping are exercised
        assert ref.stats["tokens"]["train"]["truncated"] > ref.stats["tokens"]["train"]["dropped"] > 0
    assert_same_prepared(new, ref)


def test_chat_and_text_formats_equal_the_list_pipeline(tmp_path):
    tokenizer = tt.qwen_style()
    turns = [{"messages": [{"role": "user", "content": f"q{i % 7}"}, {"role": "assistant", "content": f"a{i % 5}"}]}
             for i in range(40)]
    chat = _jsonl(tmp_path / "chat.jsonl", turns)
    for cfg in (DataConfig(train=[chat], cache=False, val_split=0.1),
                DataConfig(train=[chat], cache=False, system_prompt="Be brief.", test_size=3)):
        new, ref = prepare_datasets(cfg, tokenizer), reference_prepare(cfg, tokenizer)
        assert ref.template.name == "model"
        assert_same_prepared(new, ref)
    text = _jsonl(tmp_path / "text.jsonl", [{"text": f"The quick brown fox {i % 9}."} for i in range(30)])
    test = _jsonl(tmp_path / "test.jsonl", [{"text": "x"}])
    for cfg in (DataConfig(train=[text], cache=False), DataConfig(train=[text], test=[test], cache=False)):
        new, ref = prepare_datasets(cfg, tokenizer), reference_prepare(cfg, tokenizer)
        assert new.stats["conflicting_prompts"] == 0 and new.test_examples == []
        assert_same_prepared(new, ref)


def test_the_cache_publishes_an_entry_and_reuses_it(tmp_path, capsys):
    tokenizer = tt.gpt2_style()
    train = _jsonl(tmp_path / "train.jsonl", _alpaca_rows(40))
    cfg = DataConfig(train=[train], template="alpaca", val_split=0.1)
    first = prepare_arrow(cfg, tokenizer)
    assert "reused" not in capsys.readouterr().err
    [entry] = cache.entries()
    assert sorted(p.name for p in entry.iterdir() if not p.name.endswith(".arrow")) == [
        "heldout.json", "meta.json", "stats.json"]
    assert sorted(p.name for p in entry.glob("*.arrow")) == ["train-00000.arrow", "validation-00000.arrow"]
    files = {p.name: [p.stat().st_size, cache.entry_digest(p)] for p in entry.iterdir() if p.name != "meta.json"}
    assert json.loads((entry / "meta.json").read_text()) == {"format": "alpaca", "examples": first.stats["examples"],
                                                             "lmtune_data_cache": cache.PIPELINE_VERSION,
                                                             "key": entry.name, "files": files}
    assert list(cache.cache_root().glob(".build-*")) == []   # renamed into place
    again = prepare_arrow(cfg, tokenizer)
    assert f"data: prepared data reused from the cache {entry} (data.cache=false rebuilds it)" in capsys.readouterr().err
    assert again.train.to_dict() == first.train.to_dict() and again.validation.to_dict() == first.validation.to_dict()
    assert again.stats == first.stats and again.test_examples == first.test_examples
    assert again.template.to_dict() == first.template.to_dict() and first.template.name == "alpaca"
    # a template given by the caller is part of the key and is used as it is, cached or not
    chatml = get_template("chatml", "alpaca")
    built = prepare_arrow(cfg, tokenizer, chatml)
    assert "reused" not in capsys.readouterr().err and len(cache.entries()) == 2
    assert built.template is chatml and built.stats["template"] == "chatml"
    assert built.train["input_ids"] != first.train["input_ids"] and len(built.train) == len(first.train)
    reused = prepare_arrow(cfg, tokenizer, chatml)
    assert "reused" in capsys.readouterr().err and reused.template is chatml
    assert reused.train.to_dict() == built.train.to_dict()


def test_a_cached_auto_template_is_resolved_with_the_tokenizer(tmp_path, capsys):
    tokenizer = tt.qwen_style()   # has a chat template: auto -> model
    cfg = DataConfig(train=[_jsonl(tmp_path / "train.jsonl", _alpaca_rows(30))])
    first = prepare_arrow(cfg, tokenizer)
    again = prepare_arrow(cfg, tokenizer)
    assert "reused" in capsys.readouterr().err
    assert first.template.name == again.template.name == "model"
    assert again.template.to_dict() == first.template.to_dict()


def test_without_the_cache_the_files_live_until_exit(tmp_path, monkeypatch):
    registered = []
    monkeypatch.setattr(arrow_pipeline.atexit, "register", lambda fn, *args: registered.append((fn, args)))
    tokenizer = tt.gpt2_style()
    train = _jsonl(tmp_path / "train.jsonl", _alpaca_rows(30))
    data = prepare_arrow(DataConfig(train=[train], template="alpaca", cache=False), tokenizer)
    assert cache.entries() == []
    [(fn, (build,))] = registered
    assert fn is cache.discard and build.name.startswith("lmtune-data-")
    assert len(data.train) and sorted(p.name for p in build.iterdir()) == ["heldout.json", "stats.json",
                                                                          "train-00000.arrow",
                                                                          "validation-00000.arrow"]
    cache.discard(build)


def test_an_unwritable_cache_is_skipped_and_a_failed_build_leaves_nothing(tmp_path, monkeypatch, capsys):
    tokenizer = tt.gpt2_style()
    train = _jsonl(tmp_path / "train.jsonl", _alpaca_rows(30))
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(blocker))
    registered = []
    monkeypatch.setattr(arrow_pipeline.atexit, "register", lambda fn, *args: registered.append(args[0]))
    data = prepare_arrow(DataConfig(train=[train], template="alpaca"), tokenizer)
    err = capsys.readouterr().err
    assert err.startswith(f"warning: data cache {blocker / 'data'} not writable (") and "set LMTUNE_CACHE_DIR" in err
    assert len(data.train) and registered and registered[0].name.startswith("lmtune-data-")
    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(tmp_path / "cache"))
    long = _jsonl(tmp_path / "long.jsonl", [{"instruction": "Translate the sentence to French. " * 3,
                                             "output": "Le chat."}] * 2)
    with pytest.raises(DataError, match="^no training examples left after truncation$") as info:
        prepare_arrow(DataConfig(train=[long], template="alpaca", max_length=8), tokenizer)
    assert info.value.problems == ["data.max_length: 8 leaves no answer token in any example; raise it"]
    assert list(cache.cache_root().iterdir()) == []   # the build directory was discarded


def test_scan_split_names_every_problem(tmp_path):
    empty = _jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError) as info:
        scan_split([empty], "auto", tmp_path / "r.arrow", "training data")
    assert str(info.value) == "1 problem in the training data: 0 of 0 records are bad; fix each line below"
    assert info.value.problems == [f"{empty}: empty file (no records)"]
    with pytest.raises(DataError) as info:
        scan_split([], "auto", tmp_path / "r.arrow", "test data")
    assert str(info.value) == "1 problem in the test data: 0 of 0 records are bad; fix each line below"
    assert info.value.problems == ["(no files): no test data examples"]
    bad = _jsonl(tmp_path / "bad.jsonl", [{"instruction": "x"}, {"instruction": "y", "output": "z"},
                                          {"instruction": "y", "output": 3}])
    with pytest.raises(DataError) as info:
        scan_split([bad], "auto", tmp_path / "r.arrow", "validation data")
    assert str(info.value) == "2 problems in the validation data: 2 of 3 records are bad; fix each line below"
    assert info.value.problems == [f"{bad}:1: missing field (output)",
                                   f"{bad}:3: expected a string, got a number (output)"]
    good = scan_split([_jsonl(tmp_path / "good.jsonl", _alpaca_rows(3))], "auto", tmp_path / "r.arrow", "x")
    assert len(good) == 3 and good.problems == []


def _scanned(tmp_path, rows, name="s.jsonl"):
    return scan([_jsonl(tmp_path / name, rows)], "auto", tmp_path / (name + ".arrow"), procs=1)


def test_dedupe_and_first_duplicates_on_positions(tmp_path):
    rows = [{"instruction": f"q{i % 4}", "output": f"a{i % 4}"} for i in range(10)]
    rows[9] = {"instruction": "q1 ", "output": " a1"}   # a duplicate up to whitespace
    split = _scanned(tmp_path, rows)
    stats: dict = {}
    kept = dedupe_positions(split, True, stats, "train")
    assert kept.tolist() == [0, 1, 2, 3] and kept.dtype == np.int64
    assert stats == {"duplicates_removed": {"train": 6}}
    kept = dedupe_positions(split, False, stats, "validation")
    assert kept.tolist() == list(range(10)) and kept.dtype == np.int64
    assert stats == {"duplicates_removed": {"train": 6, "validation": 0}}
    src = lambda n: f"{tmp_path / 's.jsonl'}:{n}"   # noqa: E731
    assert first_duplicates(split) == [(src(5), src(1)), (src(6), src(2)), (src(7), src(3)), (src(8), src(4)),
                                       (src(9), src(1))]
    assert first_duplicates(split, 2) == [(src(5), src(1)), (src(6), src(2))]
    unique = _scanned(tmp_path, rows[:4], "u.jsonl")
    assert first_duplicates(unique) == [] and dedupe_positions(unique, True, {}, "t").tolist() == [0, 1, 2, 3]
    none = scan([], "auto", tmp_path / "n.arrow", procs=1)
    stats = {}
    assert first_duplicates(none) == [] and dedupe_positions(none, True, stats, "train").tolist() == []
    assert stats == {"duplicates_removed": {"train": 0}}


def test_conflicting_prompts_on_positions(tmp_path):
    rows = [{"instruction": "q1", "output": "a"}, {"instruction": "q1", "output": "b"},
            {"instruction": "q2", "output": "a"}, {"instruction": "q1", "output": "a"},
            {"instruction": "q3", "output": "c"}, {"instruction": "q3", "output": "d"},
            {"instruction": "q3", "output": "e"}]
    split = _scanned(tmp_path, rows)
    assert conflicting_prompts(split, np.arange(7)) == 2
    assert conflicting_prompts(split, np.array([0, 2, 3, 4])) == 0    # same answer twice is no conflict
    assert conflicting_prompts(split, np.array([0, 1, 2])) == 1
    assert conflicting_prompts(split, np.array([], dtype=np.int64)) == 0
    text = _scanned(tmp_path, [{"text": "a"}, {"text": "b"}], "t.jsonl")
    assert conflicting_prompts(text, np.arange(2)) == 0


def test_validation_file_of_another_format_is_refused(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", _alpaca_rows(10))
    chat = _jsonl(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "a"},
                                                          {"role": "assistant", "content": "b"}]}])
    with pytest.raises(DataError, match="^training and validation data have different formats$") as info:
        prepare_arrow(DataConfig(train=[train], validation=[chat], cache=False), tt.gpt2_style())
    assert info.value.problems == ["training files are alpaca, validation files are chat; use one format for both"]


def test_an_example_the_template_cannot_render_stops_preparation(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
            for i in range(6)]
    rows[2] = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                            {"role": "user", "content": "again"}, {"role": "assistant", "content": "b"}]}
    path = _jsonl(tmp_path / "chat.jsonl", rows)
    with pytest.raises(DataError, match="^1 examples cannot be rendered with template alpaca$") as info:
        prepare_arrow(DataConfig(train=[path], template="alpaca", val_split=0.0, test_size=0, cache=False),
                      tt.gpt2_style())
    assert len(info.value.problems) == 1 and info.value.problems[0].startswith(f"{path}:3: the alpaca template")


def test_num_proc_by_size_and_cores(monkeypatch):
    monkeypatch.setattr(token_shards, "cores", lambda: 4)
    t = token_shards.TASK_SIZE
    assert [num_proc(n) for n in (0, 1, 2 * t - 1)] == [1, 1, 1]
    assert [num_proc(n) for n in (2 * t, 2 * t + 1, 3 * t, 4 * t + 1, 100 * t)] == [2, 3, 3, 4, 4]
    monkeypatch.setattr(token_shards, "cores", lambda: 64)
    assert num_proc(100 * t) == 8 and num_proc(5 * t) == 5
    monkeypatch.setattr(token_shards, "cores", lambda: 0)
    assert num_proc(100 * t) == 1


def _split_and_examples(tmp_path, n=11):
    rows = [{"instruction": f"Translate the sentence {i}. " * (1 + i % 4), "output": f"Le chat {i}."}
            for i in range(n)]
    rows[4] = {"instruction": "Hi", "output": "Hello"}
    split = _scanned(tmp_path, rows, "shards.jsonl")
    return split, split.examples(np.arange(len(split)))


@pytest.mark.parametrize("cores", [1, 2])
def test_shards_equal_tokenize_examples(tmp_path, monkeypatch, capsys, cores):
    monkeypatch.setattr(token_shards, "TASK_SIZE", 4)
    monkeypatch.setattr(token_shards, "BATCH", 3)
    monkeypatch.setattr(token_shards, "cores", lambda: cores)
    tokenizer = tt.llama_style()
    template = get_template("alpaca", "alpaca")
    split, examples = _split_and_examples(tmp_path)
    positions = np.array([0, 1, 2, 3, 4, 5, 6, 7, 9, 10], dtype=np.int64)   # 8 left out
    ref = tokenize_examples([examples[int(p)] for p in positions], template, tokenizer, 24)
    assert ref.truncated and ref.dropped   # both cases are exercised
    out = tmp_path / "out"
    out.mkdir()
    result = tokenize_to_arrow(split, positions, template, tokenizer, 24, False, out, "train", keep_samples=3,
                               progress=False)
    assert result.files == [str(out / f"train-0000{k}.arrow") for k in range(3)]
    assert sorted(p.name for p in out.iterdir()) == ["train-00000.arrow", "train-00001.arrow", "train-00002.arrow"]
    data = load_shards(result.files)
    assert data["input_ids"] == ref.input_ids and data["completion_mask"] == ref.completion_mask
    assert data.features["input_ids"].feature.dtype == "int32" and data.features["completion_mask"].feature.dtype == "int64"
    assert result.examples == len(ref.input_ids) and result.tokens == sum(len(i) for i in ref.input_ids)
    assert result.trained_tokens == sum(sum(m) for m in ref.completion_mask)
    assert (result.truncated, result.dropped, list(result.full_lengths)) == (ref.truncated, ref.dropped,
                                                                            ref.full_lengths)
    assert result.stats() == ref.stats() and result.problems == []
    assert result.samples == list(zip(ref.input_ids, ref.completion_mask, ref.sources))[:3]
    assert token_shards._JOB == {}
    counted = tokenize_to_arrow(split, positions, template, tokenizer, 24, False, None, "x")
    assert counted.files == [] and counted.samples == [] and counted.stats() == ref.stats()
    assert capsys.readouterr().err == ""   # no progress bar for a few examples, asked for or not


def test_shards_report_unrenderable_examples(tmp_path, monkeypatch):
    monkeypatch.setattr(token_shards, "BATCH", 2)
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
            for i in range(5)]
    rows[2]["messages"] += [{"role": "user", "content": "more"}, {"role": "assistant", "content": "b"}]   # first of a batch
    split = _scanned(tmp_path, rows, "chat.jsonl")
    template = get_template("alpaca", "chat")
    out = tmp_path / "out"
    out.mkdir()
    result = tokenize_to_arrow(split, np.arange(5), template, tt.gpt2_style(), 64, False, out, "validation",
                               progress=False)
    assert result.examples == 4 and len(result.problems) == 1
    assert result.problems[0].startswith(f"{tmp_path / 'chat.jsonl'}:3: the alpaca template needs one user turn")
    assert len(load_shards(result.files)) == 4 and result.files == [str(out / "validation-00000.arrow")]


def test_shard_result_add_keeps_a_few_samples():
    a = ShardResult(files=["a"], examples=1, tokens=5, trained_tokens=2, truncated=1, dropped=0, problems=["p"],
                    samples=[([1], [1], "s1")])
    a.full_lengths.extend([5])
    b = ShardResult(files=["b"], examples=2, tokens=7, trained_tokens=3, truncated=1, dropped=1, problems=["q"],
                    samples=[([2], [1], "s2"), ([3], [1], "s3")])
    b.full_lengths.extend([3, 9, 4])
    a.add(b, keep_samples=2)
    assert (a.files, a.examples, a.tokens, a.trained_tokens, a.truncated, a.dropped, a.problems) == (
        ["a", "b"], 3, 12, 5, 2, 1, ["p", "q"])
    assert list(a.full_lengths) == [5, 3, 9, 4] and [s[2] for s in a.samples] == ["s1", "s2"]
    a.add(ShardResult(samples=[([4], [1], "s4")]), keep_samples=1)
    assert [s[2] for s in a.samples] == ["s1", "s2"]
    assert a.stats() == {"examples": 3, "length_min": 3, "length_median": 4, "length_p95": 9, "length_max": 9,
                         "truncated": 2, "dropped": 1, "tokens": 12, "trained_tokens": 5,
                         "trained_share": round(5 / 12, 4)}


def test_writer_renames_a_complete_file_and_load_shards_skips_empty_ones(tmp_path):
    import pyarrow as pa

    paths = [str(tmp_path / f"s{k}.arrow") for k in range(4)]
    w = _Writer(paths[0])
    w.write([[1, 2, 3], [4]], [[0, 1, 1], [1]])
    assert Path(paths[0] + ".partial").exists() and not Path(paths[0]).exists()
    w.write([[5, 6]], [[0, 1]])
    assert w.close() == paths[0] and not Path(paths[0] + ".partial").exists()
    schema = pa.ipc.open_stream(pa.memory_map(paths[0])).schema
    assert schema.field("input_ids").type == pa.list_(pa.int32())
    assert schema.field("completion_mask").type == pa.list_(pa.int64())
    _Writer(paths[1]).close()   # an empty shard
    w = _Writer(paths[2])
    w.write([[7, 8]], [[1, 1]])
    w.close()
    _Writer(paths[3]).close()
    one = load_shards([paths[0]])
    assert one["input_ids"] == [[1, 2, 3], [4], [5, 6]] and one["completion_mask"] == [[0, 1, 1], [1], [0, 1]]
    assert load_shards(paths)["input_ids"] == [[1, 2, 3], [4], [5, 6], [7, 8]]
    assert load_shards([paths[1], paths[2]])["input_ids"] == [[7, 8]]
    assert load_shards([paths[1], paths[3]]) is None and load_shards([paths[1]]) is None and load_shards([]) is None
    assert load_shards([paths[0]], in_memory=True).cache_files == [] and one.cache_files


def test_resolve_files_fills_only_the_empty_splits_of_a_task(tmp_path):
    from lmtune.tasks import task_files

    mine = _jsonl(tmp_path / "mine.jsonl", _alpaca_rows(2))
    bundled = {k: str(v) for k, v in task_files("sql").items()}
    assert resolve_files(DataConfig(task="sql", train=[mine])) == {
        "train": [mine], "validation": [bundled["validation"]], "test": [bundled["test"]]}
    assert resolve_files(DataConfig(train=[mine], test=[mine])) == {"train": [mine], "validation": [], "test": [mine]}
    assert "db" not in resolve_files(DataConfig(task="sql"))


def test_load_split_and_problem_summary(tmp_path):
    good = _jsonl(tmp_path / "good.jsonl", _alpaca_rows(3))
    assert len(load_split([good]).examples) == 3
    empty = _jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(DataError) as info:
        load_split([empty], what="eval data")
    assert str(info.value) == "1 problem in the eval data: 0 of 0 records are bad; fix each line below"
    assert info.value.problems == [f"{empty}: empty file (no records)"]
    with pytest.raises(DataError) as info:
        load_split([], what="eval data")
    assert info.value.problems == ["(no files): no eval data examples"]
    with pytest.raises(DataError, match="^1 problem in the data: "):
        load_split([])
    bad = _jsonl(tmp_path / "bad.jsonl", [{"instruction": "x"}, {"instruction": "y", "output": "z"},
                                          {"instruction": "y"}])
    with pytest.raises(DataError, match="^2 problems in the data: 2 of 3 records are bad; fix each line below$"):
        load_split([bad])
    loaded = LoadedData(examples=[], format=None, records=1, problems=["a"], files=[])
    assert problem_summary(loaded) == "1 problem in the data: 1 of 1 records are bad; fix each line below"
    assert problem_summary(loaded, "x", ["a", "b"]) == "2 problems in the x: 1 of 1 records are bad; fix each line below"


def test_summary_line_says_what_was_dropped():
    stats = {"records": {"train": 100}, "examples": {"train": 80, "validation": 5}, "max_length": 64,
             "duplicates_removed": {"train": 10}, "tokens": {"train": {"truncated": 7, "dropped": 2}}}
    assert summary_line(stats) == ("data: 100 training records -> 80 training examples, 5 validation "
                                   "(10 duplicates dropped; 7 truncated at data.max_length 64, 2 of them dropped "
                                   "(no answer token left))")
    stats = {"records": {"train": 10}, "examples": {"train": 3}, "duplicates_removed": {"train": 1},
             "tokens": {"train": {"truncated": 1, "dropped": 0}}, "max_length": 8}
    assert summary_line(stats) == ("data: 10 training records -> 3 training examples (1 duplicate dropped; "
                                   "1 truncated at data.max_length 8); fewer than half the records remain: "
                                   "see lmtune data check")
    assert summary_line({"records": {"train": 4}, "examples": {"train": 1, "validation": 1}}) == \
        "data: 4 training records -> 1 training examples, 1 validation"
    assert summary_line({"records": {"train": 10}, "examples": {"train": 4, "validation": 1},
                         "duplicates_removed": {"train": 5}}) == \
        "data: 10 training records -> 4 training examples, 1 validation (5 duplicates dropped)"
    assert summary_line({"records": {"train": 10}, "examples": {"train": 4, "validation": 1},
                         "duplicates_removed": {"train": 5}, "tokens": {}}).endswith("(5 duplicates dropped)")
    assert summary_line({}) == "data: 0 training records -> 0 training examples"
    assert summary_line({"records": {"train": 10}, "examples": {"train": 4}, "duplicates_removed": {"train": 6}}) == \
        "data: 10 training records -> 4 training examples (6 duplicates dropped); fewer than half the records " \
        "remain: see lmtune data check"
    assert summary_line({"records": {"train": 2}, "duplicates_removed": {"train": 2}}) == \
        "data: 2 training records -> 0 training examples (2 duplicates dropped); fewer than half the records " \
        "remain: see lmtune data check"


def test_prepare_datasets_uses_the_given_format_and_template(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", _alpaca_rows(20))
    chatml = get_template("chatml", "alpaca")
    data = prepare_datasets(DataConfig(train=[train], cache=False), tt.gpt2_style(), chatml)
    assert data.template is chatml and data.stats["template"] == "chatml"
    with pytest.raises(DataError) as info:
        load_split([train], "chat")
    assert len(info.value.problems) == 20 and len(load_split([train], "alpaca").examples) == 20


def test_conflicting_prompts_compare_key_bytes_not_numbers(tmp_path):
    """Keys are 16 hash bytes; read as floats about one in a thousand is a NaN, which never equals
    itself: the same prompt (or answer) must still count as the same."""
    from lmtune.data.formats import Example
    from lmtune.data.records import digest16

    def keys(instruction, output):
        ex = Example("x", "alpaca", fields={"instruction": instruction, "input": "", "output": output})
        return [digest16(k) for k in ex.keys()]

    def nan_bits(key: bytes) -> bool:
        return bool(np.isnan(np.frombuffer(key, dtype=np.float64)).any())

    nan_prompt = next(f"q{i}" for i in range(100_000) if nan_bits(keys(f"q{i}", "a")[1]))
    nan_answer = next(f"a{i}" for i in range(100_000) if nan_bits(keys("p", f"a{i}")[0]))
    rows = [{"instruction": nan_prompt, "output": "a"}, {"instruction": nan_prompt, "output": "b"},
            {"instruction": "p", "output": nan_answer}, {"instruction": "p", "output": nan_answer}]
    split = _scanned(tmp_path, rows)
    assert conflicting_prompts(split, np.array([0, 1])) == 1       # one prompt, two answers
    assert conflicting_prompts(split, np.array([2, 3])) == 0       # one prompt, the same answer twice
    assert conflicting_prompts(split, np.arange(4)) == 1


def test_test_files_are_scanned_to_disk_and_named_in_errors(tmp_path, monkeypatch):
    from lmtune.data import records

    monkeypatch.setattr(records, "MEMORY_BYTES", -1)   # every split's records through an Arrow file
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)   # nothing may be written outside the build directory
    rows = _alpaca_rows(60)
    train = _jsonl(tmp_path / "train.jsonl", rows[:50])
    val = _jsonl(tmp_path / "val.jsonl", rows[40:55])
    test = _jsonl(tmp_path / "test.jsonl", rows[45:])
    tokenizer = tt.gpt2_style()
    cfg = DataConfig(train=[train], validation=[val], test=[test], template="alpaca")
    data = prepare_arrow(cfg, tokenizer)
    [entry] = cache.entries()
    assert not list(entry.glob("records-*")) and not list(entry.glob("*.partial"))
    assert sorted(p.name for p in entry.iterdir()) == ["heldout.json", "meta.json", "stats.json", "train-00000.arrow",
                                                       "validation-00000.arrow"]
    ref = reference_prepare(DataConfig(train=[train], validation=[val], test=[test], template="alpaca", cache=False),
                            tokenizer)
    assert_same_prepared(data, ref)
    assert data.stats["test_prompts_in_train"] > 0 and data.stats["validation_in_train_removed"] > 0
    assert list(elsewhere.iterdir()) == []
    empty = _jsonl(tmp_path / "empty.jsonl", [])
    for given, what in (({"train": [empty]}, "training"), ({"train": [train], "validation": [empty]}, "validation"),
                        ({"train": [train], "test": [empty]}, "test")):
        with pytest.raises(DataError, match=f"^1 problem in the {what} data: ") as info:
            prepare_arrow(DataConfig(template="alpaca", cache=False, **given), tokenizer)
        assert info.value.problems == [f"{empty}: empty file (no records)"]

