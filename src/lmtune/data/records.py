"""Validate a split's files in one streaming pass into a store of valid records.

The scale form of the list-based `load_examples` (tests/helpers/data_reference.py): the same
per-record functions (`guess_format`, `to_example`), the same problems in the same order (`file:line: what (field)`), the same format
detection (majority, mixed formats, whole files in another format, tabular schemas), but records
go, batch by batch, to an Arrow IPC file on disk (columns `source` and `record`: the record as
JSON; files under MEMORY_BYTES keep these two lists in memory instead, which spares a small
`lmtune data check` the import of pyarrow and pandas) while only two 16-byte hashes per example
stay in memory (content and prompt keys, as
`Example.content_key` / `prompt_key` compute them) for dedupe, splits and overlap checks.
`ScannedSplit.examples(rows)` turns rows back into `Example`s with `to_example`, exactly as loaded
(except values JSON cannot hold, e.g. a Parquet timestamp in an extra column: they come back as text).
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmtune.data.formats import Example, _check_schemas, guess_format, other_format_files, sort_problems, to_example
from lmtune.data.parallel import cores, ordered_map
from lmtune.data.readers import (
    FileInfo,
    LongLine,
    MAX_RECORD_BYTES,
    ReadResult,
    Record,
    _decode_lines,
    _expand,
    _read_jsonl,
    too_large,
)
from lmtune.data.stream import BLOCK_BYTES, Block, End, Records, iter_units

_SCHEMA = None  # pyarrow schema, built on first use (pyarrow is imported lazily)


def _schema():
    global _SCHEMA
    if _SCHEMA is None:
        import pyarrow as pa

        _SCHEMA = pa.schema([("source", pa.string()), ("record", pa.large_string())])
    return _SCHEMA


def digest16(hex_key: str) -> bytes:
    return bytes.fromhex(hex_key)[:16]


class MemoryStore:
    """The valid records of a small scan, kept as two lists (no Arrow, no pandas import)."""

    def __init__(self):
        self.sources: list[str] = []
        self.texts: list[str] = []

    def add(self, batch) -> None:
        self.sources += batch[0]
        self.texts += batch[1]

    def close(self) -> None:
        pass

    def get(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        return [self.sources[i] for i in rows.tolist()], [self.texts[i] for i in rows.tolist()]


class ArrowStore:
    """The valid records of a large scan in an Arrow IPC file, memory-mapped when read."""

    def __init__(self, path: Path):
        import pyarrow as pa

        self.path, self._table = path, None
        self.sink = pa.OSFile(str(path), "wb")
        self.writer = pa.ipc.new_file(self.sink, _schema())

    def add(self, batch) -> None:
        self.writer.write_batch(batch)

    def close(self) -> None:
        self.writer.close()
        self.sink.close()

    def get(self, rows: np.ndarray) -> tuple[list[str], list[str]]:
        import pyarrow as pa

        if self._table is None:
            self._table = pa.ipc.open_file(pa.memory_map(str(self.path))).read_all()
        taken = self._table.take(pa.array(rows, pa.int64()))
        return taken.column("source").to_pylist(), taken.column("record").to_pylist()


@dataclass
class ScannedSplit:
    """A split's valid examples: rows of `store` (file order) and their keys, plus what
    `LoadedData` reports (format, records read, problems, files)."""

    store: Any
    format: str | None
    records: int
    problems: list[str]
    files: list[FileInfo]
    rows: np.ndarray                      # row numbers in `store` of the valid examples
    keys: np.ndarray                      # S16 content key per valid example
    prompt_keys: np.ndarray               # S16 prompt key per valid example

    def __len__(self) -> int:
        return len(self.rows)

    def _rows(self, positions) -> np.ndarray:
        return np.asarray(self.rows[np.asarray(positions, dtype=np.int64)], dtype=np.int64)

    def sources(self, positions) -> list[str]:
        return self.store.get(self._rows(positions))[0]

    def examples(self, positions) -> list[Example]:
        """Examples number `positions` (0-based among the valid examples), rebuilt exactly as
        `load_examples` built them."""
        if len(positions) == 0:
            return []
        sources, texts = self.store.get(self._rows(positions))
        return [to_example(Record(source, json.loads(text), ""), self.format)[0]
                for source, text in zip(sources, texts)]


class _Part:
    """What scanning one unit found; parts are merged in order (`_Pending.add`). Per record: its
    ordering number, file, guess; invalid records keep their problems, valid ones become rows."""

    def __init__(self, name: str = ""):
        self.name, self.read_problems, self.records_read = name, [], 0
        self.bad: list[tuple[int, str, str | None, str, list[str]]] = []  # seq, file, guess, source, problems
        self.guess_counts: Counter = Counter()
        self.per_file: dict[str, Counter] = {}
        self.row_seq = array("q")            # compact: a million rows cost megabytes, not objects
        self.row_file: list[str] = []        # (shared string objects: one pointer per row)
        self.row_guess: list[str | None] = []
        self.keys, self.prompt_keys = bytearray(), bytearray()
        self.batch = None                    # the valid records: an Arrow batch, or (sources, texts)


class _Pending(_Part):
    """All parts so far, plus the files in reading order."""

    def __init__(self):
        super().__init__()
        self.files: list[FileInfo] = []
        self.file_records: Counter = Counter()
        self.file_read_problems: Counter = Counter()

    def add(self, part: "_Part | End", store) -> None:
        if isinstance(part, End):
            self._end(part)
            return
        self.read_problems += part.read_problems
        self.file_records[part.name] += part.records_read
        self.file_read_problems[part.name] += len(part.read_problems)
        self.bad += part.bad
        self.guess_counts.update(part.guess_counts)
        for file, counts in part.per_file.items():
            self.per_file.setdefault(file, Counter()).update(counts)
        self.row_seq += part.row_seq
        self.row_file += part.row_file
        self.row_guess += part.row_guess
        self.keys += part.keys
        self.prompt_keys += part.prompt_keys
        if part.batch is not None:
            store.add(part.batch)

    def _end(self, end: End) -> None:
        info = end.info
        if end.streamed:
            info.records = self.file_records[info.path]
            if info.records == 0 and not self.file_read_problems[info.path]:
                self.read_problems.append(f"{info.path}: empty file (no records)")
        else:
            self.read_problems += end.problems
        self.files.append(info)


_JOB: dict[str, Any] = {}
MEMORY_BYTES = 32 << 20   # input files up to this size keep their valid records in memory


def scan(paths: list[str], format: str, out_path: Path, procs: int | None = None) -> ScannedSplit:
    """Read and validate `paths` (see the module doc); never raises on bad data. JSON Lines blocks
    are scanned in `procs` processes (default: by the data's size and the cores). Records of more
    than MEMORY_BYTES of files go to an Arrow file at `out_path`, smaller ones stay in memory."""
    size = _size(paths)
    procs = (min(cores(), 8) if size > 3 * BLOCK_BYTES else 1) if procs is None else procs
    early: list[str] = []
    pending = _Pending()
    _JOB.update(format=format, arrow=size > MEMORY_BYTES)
    store = ArrowStore(out_path) if _JOB["arrow"] else MemoryStore()
    try:
        for part in ordered_map(_scan_unit, iter_units(paths, early), procs):
            pending.add(part, store)
    finally:
        store.close()
    read = ReadResult(problems=early + pending.read_problems, files=pending.files)
    return _finish(read, pending, format, store)


def _size(paths: list[str]) -> int:
    return sum(f.stat().st_size for p in paths for f in _expand(Path(p), []))


def _scan_unit(unit: Block | LongLine | Records | End) -> _Part | End:
    if isinstance(unit, End):
        return unit
    if isinstance(unit, LongLine):     # a record read, too large to keep: one problem
        part = _Part(unit.name)
        part.read_problems.append(unit.problem())
        part.records_read = 1
        return part
    format = _JOB["format"]
    if isinstance(unit, Records):
        return _scan_records(unit.records, unit.seq, format, _Part())
    part = _Part(unit.name)
    lines, bad = _decode_lines(unit.data, unit.name, part.read_problems, start=unit.start)
    read = ReadResult(problems=part.read_problems)
    part.records_read = _read_jsonl(unit.name, lines, bad, read, start=unit.start).records
    return _scan_records(read.records, unit.seq - unit.start, format, part)


def _scan_records(records: list[Record], seq0: int, format: str, part: _Part) -> _Part:
    """Validate each record (seq: seq0 + its line for blocks, + its index otherwise)."""
    if _JOB["arrow"]:
        import pyarrow as pa

    sources, texts = [], []
    for i, record in enumerate(records):
        seq = seq0 + (_line(record.source) if part.name else i)
        _one(record, seq, format, part, sources, texts, sized=not part.name)
    if sources and _JOB["arrow"]:
        part.batch = pa.record_batch([pa.array(sources, pa.string()), pa.array(texts, pa.large_string())],
                                     schema=_schema())
    elif sources:
        part.batch = (sources, texts)
    return part


def _line(source: str) -> int:
    return int(source.rsplit(":", 1)[1])


def _one(record: Record, seq: int, format: str, pending: _Part, sources: list, texts: list,
         sized: bool = False) -> None:
    """`sized`: check the record's size here (JSON Lines lines were measured while reading)."""
    guess = guess_format(record.value)
    pending.per_file.setdefault(record.file, Counter())[guess] += 1
    if guess:
        pending.guess_counts[guess] += 1
    target = guess if format == "auto" else format
    if target is None:
        keys = ", ".join(list(record.value)[:8]) or "none"
        pending.bad.append((seq, record.file, None, record.source, [
            f"{record.source}: unknown record format, keys: {keys} (expected instruction/output, "
            f"messages, conversations, prompt/completion or text)"]))
        return
    example, problems = to_example(record, target)
    if example is None:
        pending.bad.append((seq, record.file, guess, record.source, problems))
        return
    text = json.dumps(record.value, ensure_ascii=False, default=str)
    if sized and len(text) > MAX_RECORD_BYTES // 4 and len(text.encode()) > MAX_RECORD_BYTES:
        pending.bad.append((seq, record.file, guess, record.source, [too_large(record.source, len(text.encode()))]))
        return
    pending.row_seq.append(seq)
    pending.row_file.append(record.file)
    pending.row_guess.append(guess)
    content, prompt = example.keys()
    pending.keys += digest16(content)
    pending.prompt_keys += digest16(prompt)
    sources.append(record.source)
    texts.append(text)


def _finish(read: ReadResult, pending: _Pending, format: str, store) -> ScannedSplit:
    """The format, the problems in load_examples' order, and the valid rows."""
    auto = format == "auto"
    fmt = format if not auto else (pending.guess_counts.most_common(1)[0][0] if pending.guess_counts else None)
    problems = list(read.problems)
    skip = _check_schemas(read.files, fmt, problems) if fmt else set()
    if auto and fmt:
        skip |= other_format_files(pending.per_file, fmt, problems)
    per_record: list[tuple[int, list[str]]] = []
    for seq, file, guess, source, record_problems in pending.bad:
        if file in skip:
            continue
        if auto and guess is not None and guess != fmt:
            record_problems = [_mixed(source, guess, fmt)]
        per_record.append((seq, record_problems))
    valid, mixed = [], []
    for i, (file, guess) in enumerate(zip(pending.row_file, pending.row_guess)):
        if file not in skip:
            (mixed if auto and guess != fmt else valid).append(i)
    if mixed:
        sources = store.get(np.asarray(mixed, dtype=np.int64))[0]
        per_record += [(pending.row_seq[i], [_mixed(src, pending.row_guess[i], fmt)])
                       for i, src in zip(mixed, sources)]
    per_record.sort(key=lambda t: t[0])
    problems += [p for _, ps in per_record for p in ps]
    rows = np.asarray(valid, dtype=np.int64)
    keys = np.frombuffer(bytes(pending.keys), dtype="S16")[rows]
    prompt_keys = np.frombuffer(bytes(pending.prompt_keys), dtype="S16")[rows]
    records = sum(f.records for f in read.files)
    return ScannedSplit(store, fmt, records, sort_problems(problems, read.files), read.files, rows,
                        keys, prompt_keys)


def _mixed(source: str, guess: str, fmt: str) -> str:
    return (f"{source}: mixed formats: this record is {guess}, most records are {fmt} (use one format "
            f"per dataset)")
