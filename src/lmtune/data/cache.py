"""lmtune's cache of prepared (tokenized) data, so that a rerun or `--resume` skips the work.

Where: $LMTUNE_CACHE_DIR/data if set, else $XDG_CACHE_HOME/lmtune/data, else ~/.cache/lmtune/data.
One directory per key; the key hashes everything the prepared data depends on:
  * the bytes of every data file (train, validation, test; a bundled task's files too),
  * the tokenizer (its tokenizer.json serialization, special tokens, chat template),
  * the template (data.template and data.system_prompt, or the saved template a caller passes),
  * every data.* setting that changes the result (format, max_length, train_on_prompt, dedupe,
    val_split, seed, test_size, ...; not packing, replay or cache itself), and PIPELINE_VERSION.
An entry is built in a `.build-*` directory next to it and renamed into place when complete
(meta.json last), so a killed run never leaves a half entry that a later run would trust.
lmtune writes only inside this directory and deletes only what it wrote there.

Every entry checks itself. meta.json records the key and, for each file of the entry, its size and
sha256, computed when the entry is built. On use (`lookup`) the entry is verified: the same
files (none missing, none added), the same sizes, the same hashes, lmtune's marker of this pipeline
version and the key asked for. A damaged, incomplete or foreign entry is removed and rebuilt with one
line on stderr saying why; it is never loaded. (Hashing every file on every use costs a small share
of loading the entry: benchmarks/README.md, "Data cache verification".) Files `datasets` writes
next to the shards during training (`cache-*.arrow`: TRL's map results, keyed by datasets' own
fingerprints) are not lmtune's and not verified; they go when their entry is rebuilt.

A build holds an exclusive flock on its `.build-*` directory while it runs, so `lmtune data cache
--clear` can tell a build a killed process left (removed) from one a running process is writing
(kept). `--clear` removes entries with lmtune's meta.json, `.build-*` directories and key-named
directories whose meta.json is missing, unreadable or not lmtune's; nothing else in the directory.
"""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from lmtune.data.readers import _expand
from lmtune.run.layout import write_json

PIPELINE_VERSION = 2     # bump when the prepared data of the same inputs would change
META = "meta.json"
MARKER = "lmtune_data_cache"
_SKIP_KEYS = ("packing", "replay", "cache")
_KEY_NAME = re.compile(r"[0-9a-f]{32}")            # what data_key returns: an entry's directory name
_BUILD_NAME = re.compile(r"\.build-[0-9a-f]{1,8}-")  # new_build_dir's names
_LOCKS: dict[Path, int] = {}                        # build directory -> the fd holding its flock
# datasets' own cache files (map results, keyed by its fingerprints) and its temporary files
_DERIVED = re.compile(r"cache-[0-9a-f]+(_\d+_of_\d+)?\.arrow|tmp\w+")


def lmtune_cache(kind: str) -> Path:
    """$LMTUNE_CACHE_DIR/KIND, else the XDG cache's lmtune/KIND (kind: data, rag)."""
    if os.environ.get("LMTUNE_CACHE_DIR"):
        return Path(os.environ["LMTUNE_CACHE_DIR"]) / kind
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lmtune" / kind


def cache_root() -> Path:
    return lmtune_cache("data")


def file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def entry_digest(path: Path) -> str:
    """sha256 of a file of an entry: its checksum in meta.json (sha256 over blake2b: the CPU's SHA
    instructions make it the faster of the two here, benchmarks/README.md)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def _data_files(files: dict[str, list[str]], problems: list[str] | None = None) -> list[list[str]]:
    """(split, path, size, content hash) of every file, directories expanded as the readers do
    (a FIFO or device is never opened: `_expand` leaves it out and reports it in `problems`)."""
    problems = [] if problems is None else problems
    out = []
    for split in sorted(files):
        for given in files[split]:
            for path in _expand(Path(given), problems):
                out.append([split, str(path), str(path.stat().st_size), file_digest(path)])
    return out


def tokenizer_fingerprint(tokenizer: Any) -> str | None:
    """A hash of what decides token ids; None for a tokenizer without a Rust backend (no cache)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None
    h = hashlib.blake2b(digest_size=16)
    h.update(backend.to_str().encode())
    extra = {"special": {k: str(v) for k, v in tokenizer.special_tokens_map.items()},
             "eos": tokenizer.eos_token_id, "split_special": bool(getattr(tokenizer, "split_special_tokens", False)),
             "chat_template": getattr(tokenizer, "chat_template", None)}
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


def data_key(data_cfg: Any, files: dict[str, list[str]], tokenizer: Any, template: Any) -> str | None:
    """The cache key of this preparation, or None when it cannot be keyed safely."""
    tok = tokenizer_fingerprint(tokenizer)
    if tok is None:
        return None
    problems: list[str] = []
    listed = _data_files(files, problems)
    if problems:   # a missing or odd file must fail in the scan, not match the key of the others
        return None
    settings = {k: v for k, v in dataclasses.asdict(data_cfg).items() if k not in _SKIP_KEYS}
    what = {"version": PIPELINE_VERSION, "settings": settings, "files": listed, "tokenizer": tok,
            "template": template.to_dict() if template is not None else None}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def combine_key(key: str, extra: str) -> str:
    """A data key that also depends on `extra` (e.g. what rewrites the examples before rendering)."""
    return hashlib.sha256(f"{key}:{extra}".encode()).hexdigest()[:32]


def lookup(key: str) -> Path | None:
    """The verified entry of `key`, or None. An entry that fails `verify` is removed (so it is
    rebuilt), with one line saying why."""
    entry = cache_root() / key
    if not os.path.lexists(entry):
        return None
    problem = verify(entry, key)
    if problem is None:
        return entry
    reason = _remove(entry)
    gone = reason is None or not os.path.lexists(entry)
    then = "rebuilding it" if gone else f"cannot remove it ({reason}); preparing it without the cache"
    print(f"data: cached data {entry} {problem}; {then}", file=sys.stderr)
    return None


def verify(entry: Path, key: str | None = None, hashes: bool = True) -> str | None:
    """What is wrong with an entry (`is damaged: ...`, `is incomplete: ...`, `is foreign: ...`), or
    None when its files are exactly those meta.json lists, with their sizes and (`hashes`) sha256."""
    meta, problem = _meta(entry)
    if problem:
        return problem
    listed = meta.get("files")
    if meta.get(MARKER) != PIPELINE_VERSION or not isinstance(listed, dict):
        return f"is foreign: written by another lmtune version ({MARKER} {meta.get(MARKER)!r})"
    if key is not None and meta.get("key") != key:
        return f"is foreign: its meta.json is for key {meta.get('key')!r}"
    if not all(isinstance(v, list) and len(v) == 2 and isinstance(v[0], int) and isinstance(v[1], str)
               for v in listed.values()):
        return f"is damaged: {META} lists its files in another form"
    try:
        return _check_files(entry, listed, hashes)
    except OSError as exc:      # a file vanished or cannot be read while checking
        return f"is damaged: {Path(exc.filename or '?').name} is unreadable ({exc.strerror})"


def _check_files(entry: Path, listed: dict, hashes: bool) -> str | None:
    found = _files(entry)
    missing = sorted(set(listed) - set(found))
    if missing:
        return f"is incomplete: {missing[0]} is missing"
    extra = sorted(set(found) - set(listed))
    if extra:
        return f"is damaged: {extra[0]} does not belong to it"
    for name, (size, _) in sorted(listed.items()):
        if found[name].stat().st_size != size:
            return f"is damaged: {name} has {found[name].stat().st_size} bytes, expected {size}"
    for name, (_, digest) in sorted(listed.items()) if hashes else ():
        if entry_digest(found[name]) != digest:
            return f"is damaged: the bytes of {name} changed"
    return None


def _meta(entry: Path) -> tuple[dict, str | None]:
    if not entry.is_dir() or entry.is_symlink():
        return {}, "is foreign: not a directory lmtune wrote"
    try:
        meta = json.loads((entry / META).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}, f"is incomplete: {META} is missing"
    except (OSError, ValueError) as exc:
        return {}, f"is damaged: {META} is unreadable ({exc.__class__.__name__})"
    if not isinstance(meta, dict):
        return {}, f"is damaged: {META} is not an object"
    return meta, None


def _files(entry: Path) -> dict[str, Path]:
    """Every file of an entry but meta.json and what `datasets` adds next to the shards later (the
    results of TRL's `map`s), by its path relative to the entry."""
    return {p.relative_to(entry).as_posix(): p for p in sorted(entry.rglob("*"))
            if p.name != META and not p.is_dir() and not _DERIVED.fullmatch(p.name)}


def _remove(path: Path) -> str | None:
    """Move `path` out of its name in one rename (no reader sees half an entry), then delete it;
    why it could not be, or None."""
    stem = path.name[:8] if _KEY_NAME.fullmatch(path.name) else "0"
    trash = path.with_name(f".build-{stem}-old-{os.getpid()}-{os.urandom(4).hex()}")
    try:
        os.rename(path, trash)
    except FileNotFoundError:
        return None           # another process removed it first
    except OSError as exc:
        return exc.strerror or str(exc)
    try:
        if trash.is_dir() and not trash.is_symlink():
            shutil.rmtree(trash)
        else:
            trash.unlink()
    except OSError as exc:    # out of the way already: a later --clear finishes it
        return f"{exc.strerror or exc} (left as {trash.name})"
    return None


def new_build_dir(key: str | None) -> Path:
    """A fresh directory to build an entry in (inside the cache root when keyed, else a temp dir).
    A keyed build holds a flock on it until `publish` or `discard`."""
    if key is None:
        return Path(tempfile.mkdtemp(prefix="lmtune-data-"))
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".build-{key[:8]}-", dir=root))
    _lock(build)
    return build


def _lock(build: Path) -> None:
    try:
        import fcntl
    except ImportError:   # no flock (Windows): --clear cannot tell a running build from a left one
        return
    fd = os.open(build, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:     # a file system without flock: build unlocked rather than not cache
        os.close(fd)
        return
    _LOCKS[build] = fd


def _unlock(build: Path) -> None:
    fd = _LOCKS.pop(build, None)
    if fd is not None:
        os.close(fd)


def in_use(build: Path) -> bool:
    """Whether a running process holds the build's flock (its own builds count as in use)."""
    if build in _LOCKS:
        return True
    try:
        import fcntl
    except ImportError:
        return False
    try:
        fd = os.open(build, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)


def checksums(directory: Path) -> dict[str, list]:
    """[size, sha256] of every file under `directory` but meta.json, by relative path."""
    return {name: [path.stat().st_size, entry_digest(path)] for name, path in _files(directory).items()}


def publish(build: Path, key: str, meta: dict[str, Any]) -> Path:
    """Write meta.json (with every file's size and hash) into the build directory, rename it to the
    entry; another process that published the same key first wins (ours, identical, is removed).
    Something else in the way (not a valid entry): ours is used uncached, removed at exit."""
    write_json(build / META, {**meta, MARKER: PIPELINE_VERSION, "key": key, "files": checksums(build)})
    entry = cache_root() / key
    try:
        os.rename(build, entry)
    except OSError:
        if verify(entry, key) is not None:
            print(f"warning: data cache: {entry} is in the way and not a valid entry; the prepared data is "
                  f"not cached (lmtune data cache --clear removes it)", file=sys.stderr)
            _unlock(build)
            atexit.register(discard, build)
            return build
        shutil.rmtree(build)
    _unlock(build)
    return entry


def discard(build: Path) -> None:
    """Remove a build directory this process created (a failed or uncached preparation)."""
    _unlock(build)
    shutil.rmtree(build, ignore_errors=True)


def entries() -> list[Path]:
    """Cache entries lmtune wrote (a meta.json with lmtune's marker)."""
    return survey()["entries"]


def survey() -> dict[str, list[Path]]:
    """What the cache directory holds, by kind: `entries` (lmtune's meta.json), `builds` (unfinished
    `.build-*` directories), `broken` (key-named directories whose meta.json is missing, unreadable
    or not lmtune's). Anything else is not lmtune's and is left out."""
    root = cache_root()
    found: dict[str, list[Path]] = {"entries": [], "builds": [], "broken": []}
    if not root.is_dir():
        return found
    for path in sorted(root.iterdir()):
        if not path.is_dir() or path.is_symlink():
            continue
        if _BUILD_NAME.match(path.name):
            found["builds"].append(path)
            continue
        meta, problem = _meta(path)
        if problem is None and MARKER in meta:
            found["entries"].append(path)
        elif _KEY_NAME.fullmatch(path.name):      # lmtune's by its name, not by its meta.json
            found["broken"].append(path)
    return found


def remove(path: Path) -> str | None:
    """Remove an entry, build or broken entry `survey` listed; the reason it could not, or None."""
    return _remove(path)


def size_bytes(path: Path) -> int:
    """Bytes under `path`; a file that vanishes meanwhile (a build renamed into place) counts 0."""
    total = 0
    for p in path.rglob("*"):
        try:
            total += p.stat().st_size if p.is_file() else 0
        except OSError:
            pass
    return total
