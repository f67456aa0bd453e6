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
lmtune writes only inside this directory and deletes only its own `.build-*` directories;
`lmtune data cache --clear` removes entries that carry lmtune's meta.json, nothing else.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

PIPELINE_VERSION = 2     # bump when the prepared data of the same inputs would change
META = "meta.json"
_SKIP_KEYS = ("packing", "replay", "cache")


def cache_root() -> Path:
    if os.environ.get("LMTUNE_CACHE_DIR"):
        return Path(os.environ["LMTUNE_CACHE_DIR"]) / "data"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lmtune" / "data"


def file_digest(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def _data_files(files: dict[str, list[str]]) -> list[list[str]]:
    """(split, path, size, content hash) of every file, directories expanded as the readers do."""
    from lmtune.data.readers import _expand

    out = []
    for split in sorted(files):
        for given in files[split]:
            for path in _expand(Path(given), []):
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
    settings = {k: v for k, v in dataclasses.asdict(data_cfg).items() if k not in _SKIP_KEYS}
    what = {"version": PIPELINE_VERSION, "settings": settings, "files": _data_files(files), "tokenizer": tok,
            "template": template.to_dict() if template is not None else None}
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:32]


def lookup(key: str) -> Path | None:
    entry = cache_root() / key
    return entry if (entry / META).is_file() else None


def new_build_dir(key: str | None) -> Path:
    """A fresh directory to build an entry in (inside the cache root when keyed, else a temp dir)."""
    if key is None:
        return Path(tempfile.mkdtemp(prefix="lmtune-data-"))
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".build-{key[:8]}-", dir=root))


def publish(build: Path, key: str, meta: dict[str, Any]) -> Path:
    """Write meta.json into the build directory, rename it to the entry; another process that
    published the same key first wins (ours, identical, is removed)."""
    from lmtune.rundir import write_json

    write_json(build / META, {**meta, "lmtune_data_cache": PIPELINE_VERSION})
    entry = cache_root() / key
    try:
        os.rename(build, entry)
    except OSError:
        if not (entry / META).is_file():
            raise
        shutil.rmtree(build)
    return entry


def discard(build: Path) -> None:
    """Remove a build directory this process created (a failed or uncached preparation)."""
    shutil.rmtree(build, ignore_errors=True)


def entries() -> list[Path]:
    """Cache entries lmtune wrote (a meta.json with lmtune's marker)."""
    root = cache_root()
    if not root.is_dir():
        return []
    out = []
    for entry in sorted(root.iterdir()):
        try:
            if entry.is_dir() and "lmtune_data_cache" in json.loads((entry / META).read_text()):
                out.append(entry)
        except (OSError, ValueError):
            continue
    return out


def size_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
