"""Records from data files in batches, without holding a whole file in memory.

JSON Lines files (and JSON Lines saved under a .json name) are read in blocks of whole lines and
parsed by the same functions as readers.py (`_decode_lines`, `_read_jsonl`), with the line numbers
carried across blocks, so every record keeps its `file:LINE` and every problem reads exactly as
`read_paths` reports it. CSV/TSV, JSON arrays and Parquet are read whole by readers.py, as before,
then handed out in the same batches: only JSON Lines scale past memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from lmtune.data.readers import (
    _BOM,
    FileInfo,
    ReadResult,
    Record,
    _decode_lines,
    _expand,
    _read_file,
    _read_jsonl,
)

BLOCK_BYTES = 8 << 20   # bytes read at once from a JSON Lines file
BATCH = 10_000          # records handed out at once for the other file types


def iter_record_batches(paths: list[str], result: ReadResult) -> Iterator[list[Record]]:
    """Records in reading order (directories expanded as `read_paths` does), in batches. Problems
    and `FileInfo`s go to `result` as `read_paths` would write them; `result.records` stays empty.
    Exhaust the iterator: a file's FileInfo is appended after its last batch."""
    for path in paths:
        for file in _expand(Path(path), result.problems):
            if _is_json_lines(file):
                yield from _stream_json_lines(file, result)
                continue
            _read_file(file, result)
            records, result.records = result.records, []
            for start in range(0, len(records), BATCH):
                yield records[start:start + BATCH]


def _is_json_lines(path: Path) -> bool:
    """.jsonl, or a .json file whose first non-blank character opens an object (readers.py reads
    such a file as JSON Lines too)."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return True
    if suffix != ".json":
        return False
    with path.open("rb") as f:
        head = f.read(1 << 16)
    head = head[len(_BOM):] if head.startswith(_BOM) else head
    text = head.decode("utf-8", errors="replace").lstrip()
    return text.startswith("{")


def _blocks(path: Path) -> Iterator[bytes]:
    """The file's bytes in pieces that end at a newline (the last piece may not)."""
    rest = b""
    with path.open("rb") as f:
        while chunk := f.read(BLOCK_BYTES):
            buf = rest + chunk
            cut = buf.rfind(b"\n") + 1
            rest = buf[cut:]
            if cut:
                yield buf[:cut]
    if rest:
        yield rest


def _stream_json_lines(path: Path, result: ReadResult) -> Iterator[list[Record]]:
    name = str(path)
    info = FileInfo(name, "jsonl" if path.suffix.lower() == ".jsonl" else "json")
    problems_before, line = len(result.problems), 1
    for block in _blocks(path):
        lines, bad = _decode_lines(block, name, result.problems, start=line)
        part = ReadResult(problems=result.problems, bad_sources=result.bad_sources)
        info.records += _read_jsonl(name, lines, bad, part, start=line).records
        line += len(lines)
        if part.records:
            yield part.records
    result.files.append(info)
    if info.records == 0 and len(result.problems) == problems_before:
        result.problems.append(f"{path}: empty file (no records)")
