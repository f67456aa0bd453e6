"""lmtune/data/readers.py and parallel.py as functions on small real files: each file type's records
and where they came from, every read problem's exact text, and the ordered, bounded parallel map."""

from __future__ import annotations

import os

import pytest

from lmtune.data import parallel, readers
from lmtune.data.readers import FileInfo, ReadResult, Record


def _read(path) -> ReadResult:
    return readers.read_paths([path])


def test_type_names_are_json_names():
    assert [readers._type_name(v) for v in (None, True, 3, 2.5, "s", [1], (1,), {"a": 1}, b"x")] == [
        "null", "a boolean", "a number", "a number", "a string", "a list", "a list", "an object", "bytes"]


def test_decode_lines_numbers_lines_reports_bad_bytes_and_strips_only_a_leading_bom():
    problems = []
    lines, bad = readers._decode_lines(b"\xef\xbb\xbfa\nb\xffc\r\nd", "f.jsonl", problems)
    assert lines == ["a\n", "b\ufffdc\r\n", "d"] and bad == {2}
    assert problems == ["f.jsonl:2: not UTF-8: byte 0xff at column 2 (re-save the file as UTF-8)"]
    problems = []
    lines, bad = readers._decode_lines(b"\xef\xbb\xbfx\n\n\xfe\n", "g", problems, start=7)
    assert lines == ["\ufeffx\n", "\n", "\ufffd\n"] and bad == {9}     # a later block: no BOM to strip
    assert problems == ["g:9: not UTF-8: byte 0xfe at column 1 (re-save the file as UTF-8)"]


def test_jsonl_records_sources_and_problems(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"a": 1}\n\n   \n{"a": 2\n[1, 2]\n{"a": 3} x\n"s"\n{"b": "\xff"}\n{"a": 4}\r\n')
    res = _read(path)
    p = str(path)
    assert [(r.source, r.value, r.file) for r in res.records] == [(f"{p}:1", {"a": 1}, p), (f"{p}:9", {"a": 4}, p)]
    assert res.problems == [
        f"{p}:8: not UTF-8: byte 0xff at column 8 (re-save the file as UTF-8)",
        f"{p}:4: malformed JSON: Expecting ',' delimiter (at the end of the line)",
        f"{p}:5: expected a JSON object, got a list",
        f"{p}:6: malformed JSON: Extra data (column 10)",
        f"{p}:7: expected a JSON object, got a string"]
    assert res.bad_sources == {f"{p}:{n}" for n in (4, 5, 6, 7, 8)}
    assert res.files == [FileInfo(p, "jsonl", records=7)]


def test_jsonl_lines_numbered_from_a_block_start():
    res = ReadResult()
    info = readers._read_jsonl("big.jsonl", ['{"a": 1}\n', "\n", '{"b": "\ufffd"}\n', "oops\n"], {12}, res, start=10)
    assert info == FileInfo("big.jsonl", "jsonl", records=3)
    assert res.records == [Record("big.jsonl:10", {"a": 1}, "big.jsonl")]
    assert res.problems == ["big.jsonl:13: malformed JSON: Expecting value (column 1)"]
    assert res.bad_sources == {"big.jsonl:12", "big.jsonl:13"}
    res = ReadResult()
    readers._read_jsonl("b", ["x\n", "{}\n"], set(), res, start=5)
    assert res.problems == ["b:5: malformed JSON: Expecting value (column 1)"] and res.records[0].source == "b:6"
    res = ReadResult()      # only the line end is cut: other trailing characters are part of the line
    readers._read_jsonl("c", ['{"a": 1}\u00a0\n', '{"a": 1}X\r\n', '{"a": 1} \t\r\n'], set(), res)
    assert res.problems == ["c:1: malformed JSON: Extra data (at the end of the line)",
                            "c:2: malformed JSON: Extra data (column 9)"]
    assert res.records == [Record("c:3", {"a": 1}, "c")]


def test_json_arrays_and_json_lines_under_a_json_name(tmp_path):
    arr = tmp_path / "a.json"
    arr.write_text('[{"a": 1},\n 5,\n {"a": 2}]')
    res = _read(arr)
    a = str(arr)
    assert [(r.source, r.value, r.file) for r in res.records] == [(f"{a}:item 0", {"a": 1}, a),
                                                                  (f"{a}:item 2", {"a": 2}, a)]
    assert res.problems == [f"{a}:item 1: expected a JSON object, got a number"] and res.bad_sources == {f"{a}:item 1"}
    assert res.files == [FileInfo(a, "json", records=3)]
    lines = tmp_path / "l.json"
    lines.write_text('\n  {"a": 1}\n{"a": 2}\n')
    res = _read(lines)
    assert [r.source for r in res.records] == [f"{lines}:2", f"{lines}:3"] and res.files[0].kind == "json"
    assert res.files[0].records == 2 and res.problems == []


def test_json_problems(tmp_path):
    def one(name, data):
        path = tmp_path / name
        path.write_bytes(data)
        res = _read(path)
        return str(path), res

    p, res = one("m.json", b'[{"a": 1},\n {"a" 2}]')
    assert res.problems == [f"{p}:2: malformed JSON: Expecting ':' delimiter (column 7)"] and res.bad_sources == {p}
    p, res = one("s.json", b'"just a string"')
    assert res.problems == [f"{p}:1: expected a JSON array of records, got a string"] and res.bad_sources == set()
    p, res = one("b.json", b'[{"a": "\xff"}]')
    assert res.problems == [f"{p}:1: not UTF-8: byte 0xff at column 9 (re-save the file as UTF-8)"]
    assert res.bad_sources == {p} and res.records == []
    p, res = one("e.json", b"  \n")
    assert res.problems == [f"{p}: empty file (no records)"] and res.files == [FileInfo(p, "json")]
    p, res = one("z.json", b"[]")
    assert res.problems == [f"{p}: empty file (no records)"]


def test_csv_and_tsv_rows_with_their_first_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(' instruction ,output\nq1,a1\n"q\n2",a2\n\n , \nq3\nq4,a4\n')
    res = _read(path)
    p = str(path)
    assert [(r.source, r.value) for r in res.records] == [
        (f"{p}:2", {"instruction": "q1", "output": "a1"}), (f"{p}:3", {"instruction": "q\n2", "output": "a2"}),
        (f"{p}:8", {"instruction": "q4", "output": "a4"})]
    assert res.problems == [f"{p}:7: row has 1 fields, the header has 2"] and res.bad_sources == {f"{p}:7"}
    assert res.files == [FileInfo(p, "csv", records=4, columns={"instruction": "string", "output": "string"},
                                  header_where=f"{p}:1")]
    tsv = tmp_path / "d.tsv"
    tsv.write_text("text\tlabel\na,b\tc\n")
    assert [r.value for r in _read(tsv).records] == [{"text": "a,b", "label": "c"}]


def test_csv_problems(tmp_path):
    def one(name, data):
        path = tmp_path / name
        path.write_bytes(data)
        return str(path), _read(path)

    p, res = one("dup.csv", b"a,b,a,b,c\n1,2,3,4,5\n")
    assert res.problems == [f"{p}:1: duplicate column(s) in the header: a, b"] and res.records == []
    assert res.files[0].columns is None
    p, res = one("empty.csv", b"")
    assert res.problems == [f"{p}: empty file (no records)"] and res.files[0].columns is None
    over = readers.MAX_RECORD_BYTES + 1                       # the per-record limit, not csv's 128 KiB
    p, res = one("head.csv", b"a," + b"x" * over + b"\n")
    assert res.problems == [f"{p}:1: unreadable CSV header (field larger than field limit ({over - 1}))"]
    p, res = one("row.csv", b"a,b\n1,2\n3,4\n5," + b"y" * over + b"\n6,7\n")
    assert res.problems == [readers.too_large(f"{p}:4", None)]
    assert [r.source for r in res.records] == [f"{p}:2", f"{p}:3"]
    p, res = one("long.csv", b"a,b\n1," + b"y" * 140_000 + b"\n")
    assert res.problems == [] and len(res.records[0].value["b"]) == 140_000
    p, res = one("bad.csv", b'a,b\n1,"x\n\xff"\n3,4\n')
    assert res.problems == [f"{p}:3: not UTF-8: byte 0xff at column 1 (re-save the file as UTF-8)"]
    assert res.bad_sources == {f"{p}:2"} and [r.source for r in res.records] == [f"{p}:4"]
    p, res = one("next.csv", b"a,b\n1,2\n3,\xff\n")          # a bad line spoils its own row only
    assert [r.source for r in res.records] == [f"{p}:2"] and res.bad_sources == {f"{p}:3"}
    p, res = one("h.csv", b"a,b\n")
    assert res.problems == [f"{p}: empty file (no records)"] and res.files[0].columns == {"a": "string", "b": "string"}


def test_parquet_rows_columns_and_a_corrupt_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["x", "y"], "n": [1, 2]}), path)
    res = _read(path)
    p = str(path)
    assert [(r.source, r.value, r.file) for r in res.records] == [(f"{p}:row 0", {"text": "x", "n": 1}, p),
                                                                  (f"{p}:row 1", {"text": "y", "n": 2}, p)]
    assert res.files == [FileInfo(p, "parquet", records=2, columns={"text": "string", "n": "int64"}, header_where=p)]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    res = _read(bad)
    assert len(res.problems) == 1 and res.problems[0].startswith(f"{bad}: not a readable Parquet file (")
    assert res.bad_sources == {str(bad)} and res.files == [FileInfo(str(bad), "parquet", header_where=str(bad))]


def test_paths_expand_directories_sorted_and_report_what_is_not_data(tmp_path):
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / ".hidden").mkdir()
    for name in ("sub/b.jsonl", "a.CSV", ".hidden/x.jsonl", ".dot.jsonl", "c.txt", "sub/a.parquet"):
        (d / name).write_text("")
    problems = []
    assert readers._expand(d, problems) == [d / "a.CSV", d / "sub" / "a.parquet", d / "sub" / "b.jsonl"]
    assert problems == []
    empty = tmp_path / "e"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    assert readers._expand(empty, problems) == []
    assert readers._expand(tmp_path / "gone.jsonl", problems) == []
    assert readers._expand(d / "c.txt", problems) == []
    assert problems == [f"{empty}: no data files (.jsonl, .json, .csv, .tsv, .parquet) in this directory",
                        f"{tmp_path / 'gone.jsonl'}: file not found",
                        f"{d / 'c.txt'}: unsupported file type '.txt' (use .jsonl, .json, .csv, .tsv, .parquet)"]
    assert readers._expand(d / "a.CSV", problems) == [d / "a.CSV"]


def test_read_paths_reads_every_file_in_order(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"t": 1}\n')
    (tmp_path / "b.jsonl").write_text('{"t": 2}\n{"t": 3}\n')
    res = readers.read_paths([tmp_path / "b.jsonl", str(tmp_path / "missing.csv"), tmp_path])
    assert [r.value["t"] for r in res.records] == [2, 3, 1, 2, 3]
    assert [f.path for f in res.files] == [str(tmp_path / n) for n in ("b.jsonl", "a.jsonl", "b.jsonl")]
    assert res.problems == [f"{tmp_path / 'missing.csv'}: file not found"]
    (tmp_path / "c.jsonl").write_text("[1]\n")
    assert readers.read_paths([tmp_path / "c.jsonl"]).problems == [
        f"{tmp_path / 'c.jsonl'}:1: expected a JSON object, got a list"]     # no "empty file" on top


# ---------------------------------------------------------------- parallel.py

def _pid_and_env(x):
    return x * x, os.getpid(), os.environ.get("TOKENIZERS_PARALLELISM")


def test_cores_are_the_cpus_this_process_may_use(monkeypatch):
    assert parallel.cores() == len(os.sched_getaffinity(0))
    monkeypatch.delattr(os, "sched_getaffinity")                # macOS, Windows: one
    assert parallel.cores() == 1


def test_one_process_maps_in_this_process():
    assert [r[:2] for r in parallel.ordered_map(_pid_and_env, range(4), 1)] == [(i * i, os.getpid()) for i in range(4)]
    assert list(parallel.ordered_map(str, [], 0)) == []


def test_workers_return_results_in_order_with_tokenizers_single_threaded(monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    out = list(parallel.ordered_map(_pid_and_env, range(9), 2))
    assert [r[0] for r in out] == [i * i for i in range(9)]
    assert os.getpid() not in {r[1] for r in out} and {r[2] for r in out} == {"false"}


@pytest.mark.parametrize("ahead,expected", [(None, 4), (3, 3)])
def test_at_most_ahead_tasks_are_taken_before_the_first_result(ahead, expected, monkeypatch):
    import multiprocessing

    monkeypatch.setattr(os, "cpu_count", lambda: 5)
    taken = []

    def tasks():
        for i in range(10):
            taken.append(i)
            yield i

    before = {p.pid for p in multiprocessing.active_children()}
    results = parallel.ordered_map(abs, tasks(), 2, ahead=ahead)
    assert next(results) == 0 and len(taken) == expected    # default: twice the processes
    workers = [p for p in multiprocessing.active_children() if p.pid not in before]
    assert len(workers) == 2                                 # as many as asked, not one per CPU
    assert list(results) == list(range(1, 10))


def test_the_worker_initializer_turns_tokenizer_threads_off(monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")       # (called here too: mutmut sees calls in this process)
    parallel._one_thread_tokenizers()
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
