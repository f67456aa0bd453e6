"""The BM25 index of rag.docs' chunks (bm25s), built once and cached by what it depends on.

Where: $LMTUNE_CACHE_DIR/rag if set, else $XDG_CACHE_HOME/lmtune/rag, else ~/.cache/lmtune/rag.
One directory per key; the key hashes the bytes of every docs file (with its path), the chunk
settings, the retriever, the tokenizer that counted the tokens (data/cache.py's fingerprint, or
"whitespace") and INDEX_VERSION: a changed document, setting or tokenizer builds a new entry.
An entry is built in a `.build-*` directory and renamed into place when whole (meta.json last),
so a killed build never leaves an entry a later run would trust; an entry that fails to load is
removed and rebuilt, with one line saying so. lmtune writes and deletes only inside this folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from lmtune.data.cache import file_digest, lmtune_cache, tokenizer_fingerprint
from lmtune.errors import UserError
from lmtune.rag.docs import Chunk, chunk_documents, doc_files, load_documents
from lmtune.run.layout import write_json

INDEX_VERSION = 1           # bump when the same inputs would index differently
META = "meta.json"
MARKER = "lmtune_rag_index"
CHUNKS = "chunks.jsonl"
BM25_DIR = "bm25"
CHECKED = "checked"          # one small file per set of documents found valid
_KEY_NAME = re.compile(r"[0-9a-f]{32}")


def cache_root() -> Path:
    return lmtune_cache("rag")


def check_documents(docs: str) -> None:
    """Every record of `docs` is valid (load_documents' errors otherwise), remembered by the files'
    content in the cache folder, so a command on unchanged documents does not parse them twice
    (the index build or the cached index follows)."""
    files = [[str(f.resolve()), f.stat().st_size, file_digest(f)] for f in doc_files(docs)]
    key = hashlib.sha256(json.dumps({"version": INDEX_VERSION, "files": files}).encode()).hexdigest()[:32]
    mark = cache_root() / CHECKED / key
    if mark.is_file():
        return
    load_documents(docs)
    try:
        mark.parent.mkdir(parents=True, exist_ok=True)
        write_json(mark, {"marker": MARKER, "files": files})
    except OSError:   # no cache: checked again next time
        pass


def index_key(settings: Any, tokenizer=None) -> str:
    """The cache key of rag.docs indexed under `settings` (a config.RagConfig) with `tokenizer`."""
    files = [[str(f.resolve()), f.stat().st_size, file_digest(f)] for f in doc_files(settings.docs)]
    tok = tokenizer_fingerprint(tokenizer) if tokenizer is not None else "whitespace"
    what = {"version": INDEX_VERSION, "files": files, "chunk_tokens": settings.chunk_tokens,
            "chunk_overlap": settings.chunk_overlap, "retriever": settings.retriever,
            "tokenizer": tok or f"unkeyed:{type(tokenizer).__name__}"}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


def words(text: str) -> list[str]:
    """Words as BM25 sees them: bm25s' default split (two or more word characters), lowercased,
    bm25s' English stopwords left out; the same for chunks and questions."""
    return [w for w in _SPLIT(text.lower()) if w not in _stopwords()]


_SPLIT = re.compile(r"(?u)\b\w\w+\b").findall


@functools.cache
def _stopwords() -> frozenset[str]:
    from bm25s.stopwords import STOPWORDS_EN

    return frozenset(STOPWORDS_EN)


def bm25_tokens(texts: list[str]):
    """The chunks as bm25s' Tokenized (word ids + vocabulary), split by `words`."""
    from bm25s.tokenization import Tokenized

    vocab: dict[str, int] = {}
    ids = [[vocab.setdefault(w, len(vocab)) for w in words(t)] for t in texts]
    return Tokenized(ids=ids, vocab=vocab)


def build_bm25(chunks: list[Chunk]):
    import bm25s

    bm25 = bm25s.BM25()
    bm25.index(bm25_tokens([c.text for c in chunks]), show_progress=False)
    return bm25


def load_index(settings: Any, tokenizer=None, cache: bool = True) -> tuple[Any, list[Chunk], bool]:
    """(bm25s index, chunks, whether it came from the cache) for rag.docs under `settings`."""
    if not settings.docs:
        raise UserError("rag.docs is not set: there are no documents to retrieve from",
                        ["set rag.docs in the config, or pass --docs DOCS"])
    if not cache:
        return *_build(settings, tokenizer), False
    key = index_key(settings, tokenizer)
    entry = cache_root() / key
    if entry.exists():
        try:
            return *_read(entry, key), True
        except Exception as exc:   # damaged or foreign: never trusted, rebuilt
            print(f"rag: cached index {entry} cannot be used ({type(exc).__name__}: {exc}); rebuilding it",
                  file=sys.stderr)
            _remove(entry)
    bm25, chunks = _build(settings, tokenizer)
    _write(entry, key, bm25, chunks)
    return bm25, chunks, False


def _build(settings: Any, tokenizer) -> tuple[Any, list[Chunk]]:
    docs = load_documents(settings.docs)
    chunks = chunk_documents(docs, settings.chunk_tokens, settings.chunk_overlap, tokenizer)
    return build_bm25(chunks), chunks


def _read(entry: Path, key: str) -> tuple[Any, list[Chunk]]:
    import bm25s

    meta = json.loads((entry / META).read_text(encoding="utf-8"))
    if meta.get("marker") != MARKER or meta.get("key") != key or meta.get("version") != INDEX_VERSION:
        raise ValueError("not lmtune's entry for this key")
    with (entry / CHUNKS).open(encoding="utf-8") as fh:
        chunks = [Chunk(*json.loads(line)) for line in fh]
    if len(chunks) != meta.get("chunks"):
        raise ValueError(f"{len(chunks)} chunks, meta.json says {meta.get('chunks')}")
    # memory-mapped: the score matrix is paged in as queries touch it, not read whole at start
    bm25 = bm25s.BM25.load(str(entry / BM25_DIR), mmap=True, show_progress=False)
    return bm25, chunks


def _write(entry: Path, key: str, bm25, chunks: list[Chunk]) -> None:
    """Build into a temporary folder beside the entry, then rename it into place. Any failure to
    write (a read-only cache) leaves the index in memory only: the run goes on without the cache."""
    root = entry.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        build = Path(tempfile.mkdtemp(prefix=f".build-{os.getpid():x}-", dir=root))
    except OSError as exc:
        print(f"rag: cannot write the index cache in {root} ({exc.strerror}); the index is not kept", file=sys.stderr)
        return
    try:
        bm25.save(str(build / BM25_DIR), show_progress=False)
        with (build / CHUNKS).open("w", encoding="utf-8") as fh:
            for c in chunks:
                fh.write(json.dumps([c.doc_id, c.source, c.index, c.text], ensure_ascii=False) + "\n")
        write_json(build / META, {"marker": MARKER, "key": key, "version": INDEX_VERSION, "chunks": len(chunks)})
        os.rename(build, entry)
    except OSError:   # another process renamed the same entry first, or the disk is full
        shutil.rmtree(build, ignore_errors=True)


def _remove(entry: Path) -> None:
    """Only an entry lmtune named (a key-shaped folder in its cache folder) is removed."""
    if _KEY_NAME.fullmatch(entry.name) and entry.parent == cache_root():
        shutil.rmtree(entry, ignore_errors=True)
