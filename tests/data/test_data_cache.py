"""lmtune/data/cache.py as functions on real files and the tiny tokenizer: where the cache lives,
what its key depends on (and what it ignores), how an entry is built, published, found, listed
and discarded."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import pytest

from lmtune.config import from_dict
from lmtune.data import cache
from lmtune.models import open_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return open_tokenizer("tiny")


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(tmp_path / "c"))
    return tmp_path / "c" / "data"


def _cfg(**data):
    return from_dict({"model": {"name_or_path": "tiny"}, "data": {"train": ["x.jsonl"], **data}}).data


def test_cache_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.cache_root() == tmp_path / "mine" / "data"
    monkeypatch.setenv("LMTUNE_CACHE_DIR", "")                   # empty: as if unset
    assert cache.cache_root() == tmp_path / "xdg" / "lmtune" / "data"
    monkeypatch.delenv("LMTUNE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache.cache_root() == tmp_path / "home" / ".cache" / "lmtune" / "data"


def test_file_digest_is_blake2b_16_of_the_bytes(tmp_path):
    path = tmp_path / "f.bin"
    data = bytes(range(256)) * 5
    path.write_bytes(data)
    assert cache.file_digest(path) == hashlib.blake2b(data, digest_size=16).hexdigest()
    assert len(cache.file_digest(path)) == 32


def test_data_files_lists_split_path_size_and_digest_with_directories_expanded(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "b.jsonl").write_text('{"text": "b"}\n')
    (folder / "a.csv").write_text("text\na\n")
    (folder / "notes.txt").write_text("not data")
    val = tmp_path / "v.jsonl"
    val.write_text('{"text": "v"}\n{"text": "w"}\n')
    got = cache._data_files({"validation": [str(val)], "train": [str(folder)], "test": [str(tmp_path / "gone.jsonl")]})
    assert got == [["train", str(folder / "a.csv"), "7", cache.file_digest(folder / "a.csv")],
                   ["train", str(folder / "b.jsonl"), "14", cache.file_digest(folder / "b.jsonl")],
                   ["validation", str(val), "28", cache.file_digest(val)]]


def test_tokenizer_fingerprint_changes_with_what_decides_token_ids(tokenizer):
    base = cache.tokenizer_fingerprint(tokenizer)
    assert len(base) == 32 and base == cache.tokenizer_fingerprint(open_tokenizer("tiny"))
    assert cache.tokenizer_fingerprint(object()) is None

    def changed(edit):
        tok = open_tokenizer("tiny")
        edit(tok)
        return cache.tokenizer_fingerprint(tok) != base

    assert changed(lambda t: t.add_tokens(["<brand_new>"]))
    assert changed(lambda t: setattr(t, "chat_template", "{{ messages }}"))
    assert changed(lambda t: setattr(t, "split_special_tokens", True))
    assert changed(lambda t: t.add_special_tokens({"pad_token": t.convert_ids_to_tokens(5)}))   # same backend


def test_data_key_depends_on_settings_files_tokenizer_and_template(tmp_path, tokenizer, monkeypatch):
    from lmtune.data.templates import get_template

    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "one"}\n')
    files = {"train": [str(path)], "validation": [], "test": []}
    key = cache.data_key(_cfg(), files, tokenizer, None)
    assert len(key) == 32 and key == cache.data_key(_cfg(), files, tokenizer, None)
    # settings that do not change the prepared data are not in the key
    assert cache.data_key(_cfg(packing=False, cache=False, replay={"ratio": 0.5}), files, tokenizer, None) == key
    assert cache.data_key(_cfg(max_length=100), files, tokenizer, None) != key
    chatml = get_template("chatml", "chat", tokenizer)
    assert cache.data_key(_cfg(), files, tokenizer, chatml) not in (key, None)
    assert cache.data_key(_cfg(), files, object(), None) is None
    monkeypatch.setattr(cache, "PIPELINE_VERSION", cache.PIPELINE_VERSION + 1)
    assert cache.data_key(_cfg(), files, tokenizer, None) != key
    monkeypatch.undo()
    path.write_text('{"text": "two"}\n')
    assert cache.data_key(_cfg(), files, tokenizer, None) != key


def test_an_entry_is_built_published_found_listed_and_sized(root):
    assert cache.entries() == [] and not root.exists()
    assert cache.lookup("k" * 32) is None
    build = cache.new_build_dir("0123456789abcdef")
    assert build.parent == root and build.name.startswith(".build-01234567-") and build.is_dir()
    (build / "rows.bin").write_bytes(b"x" * 10)
    entry = cache.publish(build, "0123456789abcdef", {"examples": 3})
    assert entry == root / "0123456789abcdef" and not build.exists()
    assert json.loads((entry / cache.META).read_text()) == {
        "examples": 3, "lmtune_data_cache": cache.PIPELINE_VERSION, "key": "0123456789abcdef",
        "files": {"rows.bin": [10, hashlib.sha256(b"x" * 10).hexdigest()]}}
    assert cache.lookup("0123456789abcdef") == entry
    assert cache.size_bytes(entry) == 10 + (entry / cache.META).stat().st_size
    assert cache.entries() == [entry]


def test_a_second_publisher_of_the_same_key_yields_to_the_first(root):
    first = cache.publish(cache.new_build_dir("aaaa1111"), "aaaa1111", {"n": 1})
    late = cache.new_build_dir("aaaa1111")
    (late / "rows.bin").write_bytes(b"late")
    assert cache.publish(late, "aaaa1111", {"n": 2}) == first
    assert not late.exists() and json.loads((first / cache.META).read_text())["n"] == 1
    # something in the way that is not a valid entry is never trusted nor replaced: ours is used uncached
    (root / "bbbb2222").mkdir()
    (root / "bbbb2222" / "half.bin").write_bytes(b"?")
    other = cache.new_build_dir("bbbb2222")
    (other / "rows.bin").write_bytes(b"x")
    assert cache.publish(other, "bbbb2222", {}) == other
    assert other.is_dir() and (root / "bbbb2222" / "half.bin").read_bytes() == b"?"


def test_entries_lists_only_lmtune_entries_in_order(root):
    for key in ("cc", "aa", "bb"):
        cache.publish(cache.new_build_dir(key), key, {})
    (root / "foreign").mkdir()
    (root / "foreign" / cache.META).write_text('{"something": 1}')
    (root / "broken").mkdir()
    (root / "broken" / cache.META).write_text("{not json")
    (root / "nometa").mkdir()
    (root / "zz-file").write_text("{}")
    assert cache.entries() == [root / "aa", root / "bb", root / "cc"]


def test_unkeyed_builds_go_to_a_temp_dir_and_discard_removes_them(root):
    build = cache.new_build_dir(None)
    assert build.is_dir() and build.name.startswith("lmtune-data-") and root not in build.parents
    (build / "sub").mkdir()
    (build / "sub" / "f").write_text("x")
    cache.discard(build)
    assert not build.exists()
    cache.discard(build)                                          # already gone: no error
    assert not os.path.exists(build)


def test_fingerprint_and_key_hash_exactly_the_documented_inputs(tokenizer, tmp_path, monkeypatch):
    """The key is a contract with every existing cache entry: a change in what is hashed (a renamed
    field, another order) silently invalidates them all, so it must come with PIPELINE_VERSION."""
    from types import SimpleNamespace

    from lmtune.data.templates import get_template

    def fingerprint(backend, document: str) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(backend.to_str().encode())
        h.update(document.encode())
        return h.hexdigest()

    backend = tokenizer.backend_tokenizer
    special = json.dumps({k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())})
    assert special == '{"eos_token": "<|endoftext|>", "pad_token": "<|pad|>"}'
    fp = cache.tokenizer_fingerprint(tokenizer)
    assert fp == fingerprint(backend, '{"chat_template": ' + json.dumps(tokenizer.chat_template)
                             + ', "eos": 1, "special": ' + special + ', "split_special": false}')
    bare = SimpleNamespace(backend_tokenizer=backend, special_tokens_map={"eos_token": "<|endoftext|>"}, eos_token_id=1)
    assert cache.tokenizer_fingerprint(bare) == fingerprint(
        backend, '{"chat_template": null, "eos": 1, "special": {"eos_token": "<|endoftext|>"}, "split_special": false}')

    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.jsonl").write_text('{"text": "one"}\n')
    cfg = _cfg(train=["t.jsonl"])
    chatml = get_template("chatml", "chat", tokenizer)
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("packing", "replay", "cache")}
    for template in (None, chatml):
        what = {"files": [["train", "t.jsonl", "16", cache.file_digest(tmp_path / "t.jsonl")]], "settings": settings,
                "template": None if template is None else template.to_dict(), "tokenizer": fp,
                "version": cache.PIPELINE_VERSION}
        document = json.dumps(what, sort_keys=True)
        assert list(json.loads(document)) == ["files", "settings", "template", "tokenizer", "version"]
        assert cache.data_key(cfg, {"train": ["t.jsonl"]}, tokenizer, template) == \
            hashlib.sha256(document.encode()).hexdigest()[:32]
