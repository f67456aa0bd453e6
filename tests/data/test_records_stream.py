"""lmtune/data/stream.py and records.py on small real files: the units a file becomes (blocks of
whole lines with their first line, batches of records, one End per file, in order), and the
streamed scan giving exactly what the list-based `load_examples` (tests/helpers/data_reference.py) gives (format, records, problems in
order, files, examples, keys) with records in memory or in an Arrow file, in one or two processes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmtune.data import records, stream
from data_reference import load_examples
from lmtune.data.readers import FileInfo, Record
from lmtune.data.stream import Block, End, Records


def _jsonl(path, rows):
    path.write_bytes(b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows))
    return path


def _alpaca(i, **more):
    return {"instruction": f"q{i}", "output": f"a{i}", **more}


# ---------------------------------------------------------------- stream.py

def test_blocks_end_at_a_newline_and_carry_line_numbers(tmp_path, monkeypatch):
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"t":1}\n{"t":2}\n\n{"t":3}')
    monkeypatch.setattr(stream, "BLOCK_BYTES", 10)
    assert list(stream._blocks(path)) == [(b'{"t":1}\n', 1, 1), (b'{"t":2}\n\n', 2, 2), (b'{"t":3}', 4, 1)]
    monkeypatch.setattr(stream, "BLOCK_BYTES", 64)
    assert list(stream._blocks(path)) == [(b'{"t":1}\n{"t":2}\n\n', 1, 3), (b'{"t":3}', 4, 1)]
    path.write_bytes(b"x" * 25 + b"\ny\n")
    monkeypatch.setattr(stream, "BLOCK_BYTES", 8)                 # a line longer than a block
    assert list(stream._blocks(path)) == [(b"x" * 25 + b"\ny\n", 1, 2)]
    path.write_bytes(b"")
    assert list(stream._blocks(path)) == []
    assert stream._count_lines(b"a\r\nb\rc\n") == 3


def test_json_lines_detection(tmp_path):
    def is_lines(name, data):
        path = tmp_path / name
        path.write_bytes(data)
        return stream._is_json_lines(path)

    assert is_lines("a.jsonl", b"[1]") and is_lines("a.JSONL", b"")
    assert is_lines("b.json", b'\n  {"a": 1}') and is_lines("c.json", b'\xef\xbb\xbf{"a": 1}')
    assert not is_lines("d.json", b'[{"a": 1}]') and not is_lines("e.json", b"")
    assert not is_lines("f.csv", b"{a}") and not is_lines("g.json", b'\xef\xbb\xbf[{"a": 1}]')
    assert is_lines("h.json", b"\xff{") is False and is_lines("i.json", b"\n" * 70000 + b"{") is False


def test_units_in_reading_order_with_ordering_numbers(tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "BLOCK_BYTES", 10)
    monkeypatch.setattr(stream, "BATCH", 2)
    a = tmp_path / "a.jsonl"
    a.write_bytes(b'{"t":1}\n{"t":2}\n\n{"t":3}')
    b = tmp_path / "b.csv"
    b.write_text("t\n1\n2\n3\n")
    c = tmp_path / "c.json"
    c.write_text('{"t":4}\n')
    problems = []
    units = list(stream.iter_units([str(a), str(tmp_path / "gone.jsonl"), str(b), str(c)], problems))
    rec = lambda n, line: Record(f"{b}:{line}", {"t": str(n)}, str(b))   # noqa: E731
    assert units == [
        Block(str(a), b'{"t":1}\n', 1, 1), Block(str(a), b'{"t":2}\n\n', 2, 2), Block(str(a), b'{"t":3}', 4, 4),
        End(FileInfo(str(a), "jsonl"), True),
        Records([rec(1, 2), rec(2, 3)], 6), Records([rec(3, 4)], 8),
        End(FileInfo(str(b), "csv", records=3, columns={"t": "string"}, header_where=f"{b}:1"), False, []),
        Block(str(c), b'{"t":4}\n', 1, 10), End(FileInfo(str(c), "json"), True)]
    assert problems == [f"{tmp_path / 'gone.jsonl'}: file not found"]
    e = tmp_path / "e.tsv"
    e.write_text("")
    assert list(stream.iter_units([str(e)], problems)) == [
        End(FileInfo(str(e), "csv", header_where=f"{e}:1"), False, [f"{e}: empty file (no records)"])]
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert list(stream.iter_units([str(empty), str(c)], problems)) == [
        End(FileInfo(str(empty), "jsonl"), True), Block(str(c), b'{"t":4}\n', 1, 3), End(FileInfo(str(c), "json"), True)]
    assert [u.seq for u in stream.iter_units([str(b), str(c), str(c)], problems) if not isinstance(u, End)] == [
        0, 2, 4, 7]                                       # numbers keep growing across files


def test_parquet_units_by_batch_then_the_next_file(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(stream, "BATCH", 2)
    p = tmp_path / "p.parquet"
    pq.write_table(pa.table({"text": [f"r{i}" for i in range(5)]}), p, row_group_size=2)
    bad = tmp_path / "q.parquet"
    bad.write_bytes(b"PAR1 but not really")
    empty = tmp_path / "r.parquet"
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), empty)
    after = tmp_path / "s.jsonl"
    after.write_text('{"text": "x"}\n')
    units = list(stream.iter_units([str(p), str(bad), str(empty), str(after)], []))
    row = lambda i: Record(f"{p}:row {i}", {"text": f"r{i}"}, str(p))   # noqa: E731
    assert units[:4] == [Records([row(0), row(1)], 0), Records([row(2), row(3)], 2), Records([row(4)], 4),
                         End(FileInfo(str(p), "parquet", records=5, columns={"text": "string"}, header_where=str(p)),
                             False, [])]
    assert units[4].info == FileInfo(str(bad), "parquet", header_where=str(bad)) and units[4].streamed is False
    with pytest.raises(Exception) as opening:        # opened for streaming, not read whole (pq.read_table)
        pq.ParquetFile(bad)
    assert units[4].problems == [f"{bad}: not a readable Parquet file ({opening.value})"]
    assert units[5] == End(FileInfo(str(empty), "parquet", columns={"text": "string"}, header_where=str(empty)),
                           False, [f"{empty}: empty file (no records)"])
    assert units[6:] == [Block(str(after), b'{"text": "x"}\n', 1, 6), End(FileInfo(str(after), "jsonl"), True)]


# ---------------------------------------------------------------- records.py

@pytest.fixture
def mixed(tmp_path):
    """A directory with every kind of problem the scan must report as load_examples does."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    d = tmp_path / "mix"
    d.mkdir()
    chat = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    _jsonl(d / "a.jsonl", [_alpaca(1), b"", {"instruction": "q2", "output": ""}, b'{"instruction": "q3"', b"[1]",
                           {f"k{i}": 1 for i in range(10)}, {}, chat, {"messages": "nope"}, {"instruction": 5},
                           b'{"instruction": "\xff", "output": "x"}', _alpaca(1), _alpaca(4, input="c", system="s"),
                           {"text": "a text record"}, _alpaca(5)])
    _jsonl(d / "b.jsonl", [{"text": "t1"}, {"text": "t2"}])                  # a whole file in another format
    (d / "c.csv").write_text("instruction,output\nq6,a6\nq7\nq8, \nq9,a9\n")
    (d / "d.csv").write_text("prompt,completion\np,c\n")                    # missing columns
    (d / "e.json").write_text(json.dumps([_alpaca(10), 3, _alpaca(11)]))
    (d / "f.json").write_text(json.dumps(_alpaca(12)) + "\n" + json.dumps(chat) + "\n")
    pq.write_table(pa.table({"instruction": ["q13", "q14"], "output": ["a13", "a14"]}), d / "g.parquet")
    pq.write_table(pa.table({"instruction": ["q15"], "output": [15]}), d / "h.parquet")   # not a text column
    (d / "i.jsonl").write_text("")
    (d / "j.jsonl").write_text("\n\n")
    (d / "k.jsonl").write_text("{oops\n")
    _jsonl(d / "l.jsonl", [{"prompt": "p", "completion": "c"}])
    return d


def _check_like_load_examples(split, paths, fmt="auto"):
    ref = load_examples(paths, fmt)
    assert split.problems == ref.problems
    assert (split.format, split.records, split.files) == (ref.format, ref.records, ref.files)
    assert len(split) == len(ref.examples)
    assert split.examples(np.arange(len(split))) == ref.examples
    assert split.keys.tolist() == [bytes.fromhex(e.content_key())[:16] for e in ref.examples]
    assert split.prompt_keys.tolist() == [bytes.fromhex(e.prompt_key())[:16] for e in ref.examples]
    assert split.sources(np.arange(len(split))) == [e.source for e in ref.examples]
    return ref


@pytest.mark.parametrize("arrow,procs", [(False, 1), (True, 1), (False, 2), (True, 2)])
def test_scan_is_load_examples_streamed(mixed, tmp_path, monkeypatch, arrow, procs):
    monkeypatch.setattr(stream, "BLOCK_BYTES", 64)                 # a.jsonl in several blocks
    monkeypatch.setattr(stream, "BATCH", 2)
    monkeypatch.setattr(records, "MEMORY_BYTES", -1 if arrow else 1 << 30)
    paths = [str(mixed), str(tmp_path / "gone.jsonl")]
    out = tmp_path / "records.arrow"
    split = records.scan(paths, "auto", out, procs=procs)
    assert isinstance(split.store, records.ArrowStore if arrow else records.MemoryStore) and out.exists() == arrow
    ref = _check_like_load_examples(split, paths)
    assert ref.format == "alpaca" and len(ref.examples) == 11 and len(ref.problems) == 24
    assert [e.source for e in split.examples([9, 0, 9])] == [ref.examples[i].source for i in (9, 0, 9)]
    assert split.examples([]) == [] and split.examples(np.array([], dtype=np.int64)) == []


@pytest.mark.parametrize("fmt", ["alpaca", "chat", "text"])
def test_scan_with_a_given_format(mixed, tmp_path, fmt):
    split = records.scan([str(mixed)], fmt, tmp_path / "r.arrow", procs=1)
    _check_like_load_examples(split, [str(mixed)], fmt)


@pytest.mark.parametrize("arrow", [False, True])
def test_scan_with_nothing_valid(tmp_path, monkeypatch, arrow):
    monkeypatch.setattr(records, "MEMORY_BYTES", -1 if arrow else 1 << 30)
    unknown = _jsonl(tmp_path / "u.jsonl", [{}, {"zz": 1}])
    split = records.scan([str(unknown)], "auto", tmp_path / "r.arrow", procs=1)
    _check_like_load_examples(split, [str(unknown)])
    assert split.format is None and split.records == 2 and len(split) == 0
    assert split.keys.dtype == np.dtype("S16") and split.keys.shape == (0,)
    table = tmp_path / "t.csv"                       # no format at all: no schema check either
    table.write_text("foo,bar\n1,2\n")
    split = records.scan([str(unknown), str(table)], "auto", tmp_path / "t.arrow", procs=1)
    _check_like_load_examples(split, [str(unknown), str(table)])
    assert split.format is None and len(split.problems) == 3
    split = records.scan([str(tmp_path / "gone.jsonl")], "auto", tmp_path / "s.arrow", procs=1)
    assert (split.format, split.records, split.files, len(split)) == (None, 0, [], 0)
    assert split.problems == [f"{tmp_path / 'gone.jsonl'}: file not found"]


def test_records_round_trip_unchanged_through_either_store(tmp_path, monkeypatch):
    rows = [_alpaca(1, input="ünïcode ✓"), {"instruction": "q", "output": "a", "extra": [1, {"b": None}]}]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    for limit in (1 << 30, -1):
        monkeypatch.setattr(records, "MEMORY_BYTES", limit)
        split = records.scan([str(path)], "auto", tmp_path / f"r{limit}.arrow", procs=1)
        texts = split.store.get(np.arange(2))[1]
        assert [json.loads(t) for t in texts] == rows and "ünïcode ✓" in texts[0]
        assert split.sources([1, 0]) == [f"{path}:2", f"{path}:1"] and split.sources([]) == []
        assert [e.fields["instruction"] for e in split.examples([1])] == ["q"]


def test_records_go_to_an_arrow_file_only_above_the_memory_limit(tmp_path, monkeypatch):
    path = _jsonl(tmp_path / "d.jsonl", [_alpaca(i) for i in range(3)])
    size = path.stat().st_size
    assert records._size([str(path), str(tmp_path), str(tmp_path / "gone.jsonl")]) == 2 * size
    monkeypatch.setattr(records, "MEMORY_BYTES", size)
    assert isinstance(records.scan([str(path)], "auto", tmp_path / "a.arrow", procs=1).store, records.MemoryStore)
    monkeypatch.setattr(records, "MEMORY_BYTES", size - 1)
    split = records.scan([str(path)], "auto", tmp_path / "b.arrow", procs=1)
    assert isinstance(split.store, records.ArrowStore) and (tmp_path / "b.arrow").stat().st_size > 0
    assert len(split.examples([0, 1, 2])) == 3


def test_processes_by_the_data_size(tmp_path, monkeypatch):
    path = _jsonl(tmp_path / "d.jsonl", [_alpaca(i) for i in range(3)] + [b""])
    size = path.stat().st_size
    asked = []
    real = records.ordered_map

    def spy(fn, tasks, procs):
        asked.append(procs)
        return real(fn, tasks, 1)

    monkeypatch.setattr(records, "ordered_map", spy)
    monkeypatch.setattr(records, "cores", lambda: 20)
    monkeypatch.setattr(records, "BLOCK_BYTES", size // 3)       # size > 3 blocks: several processes
    records.scan([str(path)], "auto", tmp_path / "a.arrow")
    monkeypatch.setattr(records, "cores", lambda: 3)
    records.scan([str(path)], "auto", tmp_path / "b.arrow")
    monkeypatch.setattr(records, "BLOCK_BYTES", -(-size // 3))   # size <= 3 blocks: one
    records.scan([str(path)], "auto", tmp_path / "c.arrow")
    records.scan([str(path)], "auto", tmp_path / "d.arrow", procs=5)
    path.write_bytes(path.read_bytes() + b"\n" * (3 - size % 3))
    monkeypatch.setattr(records, "BLOCK_BYTES", path.stat().st_size // 3)   # exactly 3 blocks: one
    records.scan([str(path)], "auto", tmp_path / "e.arrow")
    assert size % 3 and asked == [8, 3, 1, 5, 1]


def test_digest16_and_the_mixed_message():
    assert records.digest16("00ff" * 10) == bytes.fromhex("00ff" * 8)
    assert records._mixed("f:3", "chat", "alpaca") == ("f:3: mixed formats: this record is chat, most records are "
                                                       "alpaca (use one format per dataset)")
    assert records._line("dir:with:colons/f.jsonl:12") == 12


def test_the_majority_format_wins_even_when_a_minority_record_comes_first(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"text": "t"}, _alpaca(1), _alpaca(2)])
    split = records.scan([str(path)], "auto", tmp_path / "r.arrow", procs=1)
    _check_like_load_examples(split, [str(path)])
    assert split.format == "alpaca" and len(split) == 2


@pytest.mark.parametrize("arrow", [False, True])
def test_parquet_values_json_cannot_hold_are_kept_as_text(tmp_path, monkeypatch, arrow):
    import datetime

    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(records, "MEMORY_BYTES", -1 if arrow else 1 << 30)
    path = tmp_path / "d.parquet"
    when = datetime.datetime(2024, 5, 1, 12, 30)
    pq.write_table(pa.table({"instruction": ["q"], "output": ["a"], "at": [when]}), path)
    split = records.scan([str(path)], "auto", tmp_path / "r.arrow", procs=1)
    ref = load_examples([str(path)])
    assert split.problems == ref.problems == [] and ref.examples[0].fields["at"] == when
    (got,) = split.examples([0])                     # the timestamp comes back as its text
    assert got.fields == {**ref.examples[0].fields, "at": "2024-05-01 12:30:00"}
    assert got.messages == ref.examples[0].messages and split.keys.tolist() == [
        bytes.fromhex(ref.examples[0].content_key())[:16]]
