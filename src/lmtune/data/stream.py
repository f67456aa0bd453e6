"""Data files as a stream of work units, without holding a whole file in memory.

JSON Lines files (and JSON Lines saved under a .json name) become blocks of whole lines, each
tagged with the number of its first line, that records.py parses with readers.py's own functions
(`_decode_lines`, `_read_jsonl`) in worker processes, so every record keeps its `file:LINE` and
every problem reads exactly as `read_paths` reports it. CSV/TSV, JSON arrays and Parquet are
read whole by readers.py, as before, then handed out in batches: only JSON Lines scale past memory.
Each file ends with an `End` unit carrying its FileInfo, so the consumer can keep files in order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lmtune.data.readers import _BOM, FileInfo, LongLine, ReadResult, Record, _expand, _read_file, line_blocks

BLOCK_BYTES = 4 << 20   # bytes per block of a JSON Lines file (~25,000 short records)
BATCH = 10_000          # records per unit for the other file types


@dataclass
class Block:
    name: str
    data: bytes
    start: int       # number of the block's first line
    seq: int         # ordering number of the block's first line among all units


@dataclass
class Records:
    records: list[Record]
    seq: int


@dataclass
class End:
    """A file is done: its FileInfo (records counted by the consumer for blocks) and, for files
    read whole, the problems reading found (`streamed`: False)."""

    info: FileInfo
    streamed: bool
    problems: list[str] = field(default_factory=list)


def iter_units(paths: list[str], problems: list[str]) -> Iterator[Block | LongLine | Records | End]:
    """Units in reading order (directories expanded as `read_paths` does); problems found while
    expanding the paths (file not found, not a regular file, ...) go to `problems`. A JSON Lines
    line over readers.MAX_RECORD_BYTES comes as a LongLine (its size, not its bytes)."""
    seq = 0
    for path in paths:
        for file in _expand(Path(path), problems):
            if _is_json_lines(file):
                last = 1
                for piece in _blocks(file):
                    if isinstance(piece, LongLine):
                        yield piece
                        last = piece.line + 1
                        continue
                    block, start, lines = piece
                    yield Block(str(file), block, start, seq + start)
                    last = start + lines
                seq += last + 1
                yield End(FileInfo(str(file), "jsonl" if file.suffix.lower() == ".jsonl" else "json"), True)
                continue
            if file.suffix.lower() == ".parquet":
                seq = yield from _parquet_units(file, seq)
                continue
            read = ReadResult()
            _read_file(file, read)
            for begin in range(0, len(read.records), BATCH):
                yield Records(read.records[begin:begin + BATCH], seq + begin)
            seq += len(read.records)
            yield End(read.files[0], False, read.problems)


def _parquet_units(path: Path, seq: int):
    """A Parquet file in batches of rows (`file:row N`, as readers._read_parquet numbers them),
    read row group by row group instead of whole. Returns the next ordering number."""
    import pyarrow.parquet as pq

    name = str(path)
    info = FileInfo(name, "parquet", header_where=name)
    try:
        parquet = pq.ParquetFile(path)
        info.columns = {f.name: str(f.type) for f in parquet.schema_arrow}
        batches = parquet.iter_batches(batch_size=BATCH)
        first = next(batches, None)
    except Exception as exc:  # pyarrow raises several types for corrupt or non-Parquet files
        yield End(info, False, [f"{name}: not a readable Parquet file ({exc})"])
        return seq
    index, batch = 0, first
    while batch is not None:
        rows = batch.to_pylist()
        yield Records([Record(f"{name}:row {index + i}", row, name) for i, row in enumerate(rows)], seq + index)
        index += len(rows)
        batch = next(batches, None)
    info.records = index
    yield End(info, False, [] if index else [f"{path}: empty file (no records)"])
    return seq + index


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
    return head.decode("utf-8", errors="replace").lstrip().startswith("{")


def _count_lines(block: bytes) -> int:
    return len(block.splitlines())   # the lines `_decode_lines` will number


def _blocks(path: Path) -> Iterator[tuple[bytes, int, int] | LongLine]:
    """(bytes, number of the first line, lines) in pieces that end at a newline (the last may not),
    or a LongLine for a record over the per-record limit (readers.line_blocks)."""
    with path.open("rb") as f:
        yield from line_blocks(f, str(path), BLOCK_BYTES)
