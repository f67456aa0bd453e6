"""Read data files into raw records, each tagged with where it came from.

Supported: JSON Lines (.jsonl), JSON (.json: an array of records, or JSON Lines under a .json
name), CSV/TSV (.csv, .tsv) and Parquet (.parquet), or a directory holding any of them.

Where a record came from (`Record.source`), as the user will look it up:
  JSONL       file:LINE        (1-based line number)
  CSV/TSV     file:LINE        (1-based line of the row's first line; the header is line 1)
  JSON array  file:item N      (0-based index, as jq '.[N]' shows it)
  Parquet     file:row N       (0-based row, as pandas/pyarrow show it)

Reading never raises on bad input: every problem is appended to `ReadResult.problems` as
`where: what is wrong`, so one pass reports all of them. Only the standard library and (for
Parquet) pyarrow are used, so `lmtune data check` stays free of torch.

Odd files: only regular files are read. A FIFO, a device (/dev/zero), a socket, named directly or
found in a directory under a data suffix, is a problem (`not a regular file`), never opened: reading
one would block forever or never end. One record (a JSON Lines line) may hold at most
MAX_RECORD_BYTES; a longer line is read through without being kept (`line_blocks`) and reported
as `file:LINE: record of N MiB, over the limit`, so memory stays bounded whatever the file holds.
"""

from __future__ import annotations

import csv
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
_BOM = b"\xef\xbb\xbf"
MAX_RECORD_BYTES = 8 << 20   # one record (line); far beyond any data.max_length, small enough to hold


@dataclass
class Record:
    source: str  # "file:line", "file:item N" or "file:row N"
    value: Any  # the parsed record (a dict when the file is well formed)
    file: str  # the file it came from, as the user named it


@dataclass
class FileInfo:
    """One file read. `columns` maps column -> type name for tabular files (CSV, Parquet)."""

    path: str
    kind: str  # jsonl | json | csv | parquet
    records: int = 0
    columns: dict[str, str] | None = None
    header_where: str = ""  # where to report a schema problem: "file:1" (CSV) or "file" (Parquet)


@dataclass
class ReadResult:
    records: list[Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    files: list[FileInfo] = field(default_factory=list)
    bad_sources: set[str] = field(default_factory=set)  # records lost to a read problem


def read_paths(paths: list[str | Path]) -> ReadResult:
    """Read every file (directories are expanded, sorted, recursively) into one ReadResult."""
    result = ReadResult()
    for path in paths:
        for file in _expand(Path(path), result.problems):
            _read_file(file, result)
    return result


def _expand(path: Path, problems: list[str]) -> list[Path]:
    if path.is_dir():
        found = listing(path)
        files, odd_files = [], 0
        for file in found:
            odd = odd_file(file)
            if odd:
                problems.append(f"{file}: {odd}")
                odd_files += 1
            elif file.exists():      # a dangling link is not data
                files.append(file)
        if not files and not odd_files:
            problems.append(f"{path}: no data files ({', '.join(SUFFIXES)}) in this directory")
        return files
    if not path.exists():
        problems.append(f"{path}: file not found")
        return []
    odd = odd_file(path)
    if odd:
        problems.append(f"{path}: {odd}")
        return []
    if path.suffix.lower() not in SUFFIXES:
        problems.append(f"{path}: unsupported file type '{path.suffix}' (use {', '.join(SUFFIXES)})")
        return []
    return [path]


def listing(directory: Path) -> list[Path]:
    """The paths under a directory that read_paths reads (data suffixes, hidden ones skipped), sorted;
    links and special files included, for the caller to sort out."""
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in SUFFIXES and not p.is_dir()
                  and not any(part.startswith(".") for part in p.relative_to(directory).parts))


_SPECIAL = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def special_kind(path: str | Path) -> str | None:
    """What `path` (links followed) is when it exists and is neither a regular file nor a directory
    ("a FIFO (named pipe)", "a character device", ...), else None. stat only: opening a FIFO blocks
    until a writer comes, and a device like /dev/zero never ends."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((name for test, name in _SPECIAL if test(mode)), "not a file")


def odd_file(path: Path) -> str | None:
    """Why `path` (links followed) cannot be read as a data file, or None for a regular file, a
    directory or a path that does not exist (reported elsewhere). stat only: nothing is opened."""
    kind = special_kind(path)
    return f"not a regular file: {kind}; give a data file, or a directory of them" if kind else None


@dataclass
class LongLine:
    """A line over MAX_RECORD_BYTES, read through but not kept (`line_blocks`)."""

    name: str
    line: int     # its 1-based number
    size: int     # its bytes, line end excluded

    def problem(self) -> str:
        return too_large(f"{self.name}:{self.line}", self.size)


def too_large(where: str, size: int | None) -> str:
    """The problem of a record over the limit (`size` None: a CSV field, measured only that far)."""
    what = f"record of {size / 2**20:.1f} MiB" if size is not None else "a field of the record"
    return (f"{where}: {what}, over the limit of {MAX_RECORD_BYTES >> 20} MiB per record (shorten or split "
            f"it: nothing past data.max_length tokens is trained anyway)")


def line_blocks(f, name: str, block_bytes: int, limit: int | None = None
                ) -> Iterator[tuple[bytes, int, int] | LongLine]:
    """(bytes, number of the first line, lines) in pieces that end at a newline (the last may not),
    read from binary file `f`; a line longer than `limit` bytes comes as a LongLine instead, and is
    never held: memory stays under limit + block_bytes. Reading blocks of at most `limit` bytes keeps
    every line but the first of a piece inside one block, so only that first line needs measuring."""
    limit = MAX_RECORD_BYTES if limit is None else limit
    block_bytes = min(block_bytes, limit)
    rest, line, skipping = b"", 1, None
    while chunk := f.read(block_bytes):
        if skipping is not None:       # inside a long line: find its end, keep nothing
            end = chunk.find(b"\n")
            if end < 0:
                skipping.size += len(chunk)
                continue
            skipping.size += end
            yield skipping
            skipping, line, chunk = None, line + 1, chunk[end + 1:]
        buf = rest + chunk
        end = buf.find(b"\n")
        if (end if end >= 0 else len(buf)) > limit:
            if end < 0:
                skipping, rest = LongLine(name, line, len(buf)), b""
                continue
            yield LongLine(name, line, end)
            line, buf = line + 1, buf[end + 1:]
        cut = buf.rfind(b"\n") + 1
        rest = buf[cut:]
        if cut:
            lines = len(buf[:cut].splitlines())   # the lines `_decode_lines` will number
            yield buf[:cut], line, lines
            line += lines
    if skipping is not None:
        yield skipping
    elif rest:
        yield rest, line, len(rest.splitlines())


def _read_file(path: Path, result: ReadResult) -> None:
    suffix = path.suffix.lower()
    problems_before = len(result.problems)
    if suffix == ".parquet":
        info = _read_parquet(path, result)
    elif suffix == ".jsonl":
        info = _read_jsonl_file(path, result)
    else:
        raw = path.read_bytes()
        lines, bad = _decode_lines(raw, str(path), result.problems)
        if suffix == ".json":
            info = _read_json(str(path), lines, bad, result)
        else:
            info = _read_csv(str(path), lines, bad, result, delimiter="\t" if suffix == ".tsv" else ",")
    result.files.append(info)
    if info.records == 0 and len(result.problems) == problems_before:
        result.problems.append(f"{path}: empty file (no records)")


def _decode_lines(raw: bytes, name: str, problems: list[str], start: int = 1) -> tuple[list[str], set[int]]:
    """Split bytes into text lines (keeping line ends). A line that is not UTF-8 is reported with
    the offending byte and decoded with replacement characters; its 1-based number goes in `bad`.
    `start`: the number of the first line (stream.py reads a large file in blocks)."""
    if start == 1 and raw.startswith(_BOM):  # Excel and Notepad write one; it is not part of the first key
        raw = raw[len(_BOM):]
    lines, bad = [], set()
    for number, line in enumerate(raw.splitlines(keepends=True), start=start):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            problems.append(f"{name}:{number}: not UTF-8: byte 0x{line[exc.start]:02x} at column "
                            f"{exc.start + 1} (re-save the file as UTF-8)")
            lines.append(line.decode("utf-8", errors="replace"))
            bad.add(number)
    return lines, bad


def _type_name(value: Any) -> str:
    """JSON's names for Python values, for messages users read."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _read_jsonl(name: str, lines: list[str], bad: set[int], result: ReadResult, start: int = 1) -> FileInfo:
    info = FileInfo(name, "jsonl")
    for number, line in enumerate(lines, start=start):
        if not line.strip():
            continue
        where = f"{name}:{number}"
        info.records += 1
        if number in bad:
            result.bad_sources.add(where)
            continue
        text = line.rstrip("\r\n")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            at = "at the end of the line" if exc.pos >= len(text.rstrip()) else f"column {exc.colno}"
            result.problems.append(f"{where}: malformed JSON: {exc.msg} ({at})")
            result.bad_sources.add(where)
            continue
        if not isinstance(value, dict):
            result.problems.append(f"{where}: expected a JSON object, got {_type_name(value)}")
            result.bad_sources.add(where)
            continue
        result.records.append(Record(where, value, name))
    return info


def _read_jsonl_file(path: Path, result: ReadResult) -> FileInfo:
    """A JSON Lines file block by block (`line_blocks`): a huge line is a problem, not a memory spike."""
    name, info = str(path), FileInfo(str(path), "jsonl")
    with path.open("rb") as f:
        for piece in line_blocks(f, name, 4 << 20):
            if isinstance(piece, LongLine):
                result.problems.append(piece.problem())
                result.bad_sources.add(f"{name}:{piece.line}")
                info.records += 1
                continue
            block, start, _ = piece
            lines, bad = _decode_lines(block, name, result.problems, start=start)
            info.records += _read_jsonl(name, lines, bad, result, start=start).records
    return info


def _read_json(name: str, lines: list[str], bad: set[int], result: ReadResult) -> FileInfo:
    text = "".join(lines)
    if text.lstrip().startswith("{"):  # JSON Lines saved under a .json name (datasets does the same)
        info = _read_jsonl(name, lines, bad, result)
        info.kind = "json"
        return info
    info = FileInfo(name, "json")
    if not text.strip():
        return info
    if bad:  # the bytes are already reported per line; item boundaries cannot be trusted
        result.bad_sources.add(name)
        return info
    decoder = json.JSONDecoder()
    try:
        value = decoder.decode(text)
    except json.JSONDecodeError as exc:
        result.problems.append(f"{name}:{exc.lineno}: malformed JSON: {exc.msg} (column {exc.colno})")
        result.bad_sources.add(name)
        return info
    if not isinstance(value, list):
        result.problems.append(f"{name}:1: expected a JSON array of records, got {_type_name(value)}")
        return info
    for index, item in enumerate(value):
        where = f"{name}:item {index}"
        info.records += 1
        if not isinstance(item, dict):
            result.problems.append(f"{where}: expected a JSON object, got {_type_name(item)}")
            result.bad_sources.add(where)
            continue
        result.records.append(Record(where, item, name))
    return info


def _read_csv(name: str, lines: list[str], bad: set[int], result: ReadResult, delimiter: str) -> FileInfo:
    info = FileInfo(name, "csv", header_where=f"{name}:1")
    # the csv module's own default (128 KiB a field) would refuse long answers: the record limit rules
    csv.field_size_limit(max(csv.field_size_limit(), MAX_RECORD_BYTES))
    reader = csv.reader(lines, delimiter=delimiter)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        result.problems.append(f"{name}:1: unreadable CSV header ({exc})")
        return info
    if not header:
        return info
    header = [h.strip() for h in header]
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        result.problems.append(f"{name}:1: duplicate column(s) in the header: {', '.join(dupes)}")
        return info
    info.columns = {h: "string" for h in header}
    last = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # e.g. an unterminated quote swallows the rest of the file
            too_big = "field larger than field limit" in str(exc)
            result.problems.append(too_large(f"{name}:{last + 1}", None) if too_big
                                   else f"{name}:{last + 1}: unreadable CSV row ({exc})")
            break
        start, last = last + 1, reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        where = f"{name}:{start}"
        info.records += 1
        if bad.intersection(range(start, last + 1)):
            result.bad_sources.add(where)
            continue
        if len(row) != len(header):
            result.problems.append(f"{where}: row has {len(row)} fields, the header has {len(header)}")
            result.bad_sources.add(where)
            continue
        result.records.append(Record(where, dict(zip(header, row)), name))
    return info


def _read_parquet(path: Path, result: ReadResult) -> FileInfo:
    import pyarrow.parquet as pq  # only when a Parquet file is given

    name = str(path)
    info = FileInfo(name, "parquet", header_where=name)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for corrupt or non-Parquet files
        result.problems.append(f"{name}: not a readable Parquet file ({exc})")
        result.bad_sources.add(name)
        return info
    info.columns = {f.name: str(f.type) for f in table.schema}
    for index, row in enumerate(table.to_pylist()):
        info.records += 1
        result.records.append(Record(f"{name}:row {index}", row, name))
    return info
