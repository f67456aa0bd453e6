"""rag.docs -> documents -> passages (chunks).

rag.docs is a JSONL file of {"id", "text"} records (other keys are ignored), a folder of .txt/.md
files (searched recursively; a file's id is its path inside the folder), or one .txt/.md file.
A bad record is reported as `file:line: what is wrong`, every one of them at once (exit 2).

Chunks are windows of `chunk_tokens` tokens of the run's tokenizer, each sharing `chunk_overlap`
tokens with the one before, cut from the original text at token boundaries (so a passage reads
exactly as the document does). Without a tokenizer, whitespace-separated words count as tokens.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lmtune.errors import DataError, UserError

TEXT_SUFFIXES = (".txt", ".md")
MAX_SHOWN = 20                  # problems listed; the rest are counted
_BATCH = 512                    # documents per tokenizer call (the fast tokenizer batches in Rust)
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Document:
    id: str
    source: str                 # where it came from: file:line (JSONL) or the file's path
    text: str


@dataclass(frozen=True)
class Chunk:
    doc_id: str
    source: str
    index: int                  # position of the chunk in its document, from 0
    text: str


def doc_files(path: str | Path) -> list[Path]:
    """The files rag.docs names, sorted (what the index cache hashes)."""
    p = Path(path).expanduser()
    fix = ["set rag.docs (or --docs) to a JSONL file of {id, text} records or a folder of .txt/.md files"]
    if not p.exists():
        raise UserError(f"docs: {path} does not exist", fix)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in TEXT_SUFFIXES and f.is_file())
        if not files:
            raise UserError(f"docs: {path} holds no .txt or .md files", fix)
        return files
    if not p.is_file():
        raise UserError(f"docs: {path} is not a regular file or folder", fix)
    if p.suffix.lower() not in (".jsonl", *TEXT_SUFFIXES):
        raise UserError(f"docs: {path} is neither .jsonl, .txt nor .md", fix)
    return [p]


def load_documents(path: str | Path) -> list[Document]:
    """Every document of rag.docs; DataError listing every bad record."""
    root = Path(path).expanduser()
    files = doc_files(root)
    docs: list[Document] = []
    problems: list[str] = []
    for f in files:
        if f.suffix.lower() == ".jsonl":
            docs += _jsonl(f, problems)
        else:
            text = _text(f, problems)
            name = f.relative_to(root).as_posix() if root.is_dir() else f.name
            if text is not None and text.strip():
                docs.append(Document(name, str(f), text))
    if problems:
        shown = problems[:MAX_SHOWN] + ([f"... and {len(problems) - MAX_SHOWN} more"]
                                        if len(problems) > MAX_SHOWN else [])
        raise DataError(f"docs: {len(problems)} bad document{'s' if len(problems) > 1 else ''} in {path}", shown)
    if not docs:
        raise UserError(f"docs: {path} holds no text", ["give documents with some text in them"])
    return docs


def _text(path: Path, problems: list[str]) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})")
        return None


def _jsonl(path: Path, problems: list[str]) -> list[Document]:
    out: list[Document] = []
    seen: dict[str, int] = {}
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            where = f"{path}:{n}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                problems.append(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})")
                continue
            if not line.strip():
                continue
            doc = _record(line, where, problems)
            if doc is None:
                continue
            if doc.id in seen:
                problems.append(f"{where}: id {doc.id!r} already used on line {seen[doc.id]}; ids must be unique")
                continue
            seen[doc.id] = n
            out.append(doc)
    return out


def _record(line: str, where: str, problems: list[str]) -> Document | None:
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        problems.append(f"{where}: malformed JSON ({exc.msg})")
        return None
    if not isinstance(rec, dict):
        problems.append(f"{where}: expected a JSON object with id and text, got {type(rec).__name__}")
        return None
    doc_id, text = rec.get("id"), rec.get("text")
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id).strip() == "":
        problems.append(f"{where}: id: expected a non-empty string or integer, got {doc_id!r}")
        return None
    if not isinstance(text, str) or not text.strip():
        problems.append(f"{where}: text: expected a non-empty string, got {text!r:.40}")
        return None
    return Document(str(doc_id), where, text)


def chunk_documents(docs: list[Document], size: int, overlap: int, tokenizer=None) -> list[Chunk]:
    """Every document cut into windows of `size` tokens, `overlap` shared between neighbours."""
    if not 0 <= overlap < size:
        raise ValueError(f"chunk overlap {overlap} must be in [0, {size})")
    chunks: list[Chunk] = []
    for start in range(0, len(docs), _BATCH):
        batch = docs[start:start + _BATCH]
        for doc, spans in zip(batch, token_spans([d.text for d in batch], tokenizer)):
            for i, (a, b) in enumerate(windows(spans, size, overlap)):
                chunks.append(Chunk(doc.id, doc.source, i, doc.text[a:b]))
    return chunks


def token_spans(texts: list[str], tokenizer=None) -> list[list[tuple[int, int]]]:
    """(start, end) character offsets of each text's tokens: the tokenizer's offsets when it has
    them (a fast tokenizer), else whitespace-separated words."""
    if tokenizer is not None and getattr(tokenizer, "is_fast", False):
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        return [[(a, b) for a, b in offsets if b > a] for offsets in enc["offset_mapping"]]
    return [[m.span() for m in _WORD.finditer(t)] for t in texts]


def windows(spans: list[tuple[int, int]], size: int, overlap: int) -> list[tuple[int, int]]:
    """Character ranges of the token windows: [0, size), [size - overlap, 2 size - overlap), ...
    until the last token is covered."""
    out = []
    step = size - overlap
    for first in range(0, max(len(spans), 1), step):
        last = min(first + size, len(spans)) - 1
        if last < first:
            break
        out.append((spans[first][0], spans[last][1]))
        if last == len(spans) - 1:
            break
    return out
