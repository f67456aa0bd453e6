"""The data cache checks itself (lmtune/data/cache.py; docs/reliability.md, "Odd files and the data
cache"). A prepared entry is built for real (arrow_pipeline.prepare_arrow, a tiny tokenizer), then
damaged as a disk, a careless user or another lmtune version would: bytes flipped in a shard, a
shard cut short, a file deleted or added, meta.json broken, missing or foreign. The next use prints
one line naming the entry and what is wrong, rebuilds it, and returns exactly what a fresh build
returns (never the damaged data); the use after that reuses the rebuilt entry. `lmtune data cache`
lists unfinished `.build-*` folders and broken entries and `--clear` removes them, keeping a build a
running process holds and anything that is not lmtune's; a read-only cache on --clear exits 2."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tiny_tokenizers as tt
from lmtune.checks import _can_write
from lmtune.cli import main
from lmtune.config import DataConfig
from lmtune.data import cache
from lmtune.data.arrow_pipeline import prepare_arrow

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tokenizer():
    return tt.gpt2_style()


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(tmp_path / "cache"))
    rows = [{"instruction": f"Question {i % 23}", "output": f"Answer {i % 19} " + "word " * (i % 7)}
            for i in range(300)]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return DataConfig(train=[str(path)], template="alpaca", val_split=0.1)


def snapshot(prepared) -> tuple:
    """Everything a run gets from prepared data, as plain values (the datasets are memory-mapped on
    the entry's files: damaging them in place would change a live object too)."""
    return (prepared.stats, prepared.test_examples, prepared.template.to_dict(), prepared.train.to_dict(),
            prepared.validation.to_dict())


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF                     # same size: only the hash can tell
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _meta_edit(**changes):
    def edit(entry: Path) -> None:
        meta = json.loads((entry / cache.META).read_text())
        (entry / cache.META).write_text(json.dumps({**meta, **changes}))
    return edit


DAMAGE = {   # name: (how, the words the line must say)
    "flipped-bytes-in-a-shard": (lambda e: _flip(e / "train-00000.arrow"),
                                 "is damaged: the bytes of train-00000.arrow changed"),
    "flipped-bytes-in-stats": (lambda e: _flip(e / "stats.json"), "is damaged: the bytes of stats.json changed"),
    "truncated-shard": (lambda e: _truncate(e / "validation-00000.arrow"),
                        "is damaged: validation-00000.arrow has"),
    "deleted-shard": (lambda e: (e / "train-00000.arrow").unlink(), "is incomplete: train-00000.arrow is missing"),
    "deleted-heldout": (lambda e: (e / "heldout.json").unlink(), "is incomplete: heldout.json is missing"),
    "added-shard": (lambda e: shutil.copy(e / "train-00000.arrow", e / "train-00001.arrow"),
                    "is damaged: train-00001.arrow does not belong to it"),
    "meta-deleted": (lambda e: (e / cache.META).unlink(), "is incomplete: meta.json is missing"),
    "meta-not-json": (lambda e: (e / cache.META).write_text('{"lmtune_data_cache": 1, "fi'),
                      "is damaged: meta.json is unreadable (JSONDecodeError)"),
    "meta-of-another-key": (_meta_edit(key="0" * 32), "is foreign: its meta.json is for key '00000000"),
    "meta-of-another-version": (_meta_edit(lmtune_data_cache=999), "is foreign: written by another lmtune version"),
    "meta-files-malformed": (_meta_edit(files={"train-00000.arrow": "0123"}),
                             "is damaged: meta.json lists its files in another form"),
    "meta-without-checksums": (lambda e: (e / cache.META).write_text('{"lmtune_data_cache": 1, "format": "alpaca"}'),
                               "is foreign: written by another lmtune version"),
}


@pytest.mark.parametrize("name", list(DAMAGE))
def test_a_damaged_entry_is_rebuilt_with_one_line_and_equals_a_fresh_build(name, tokenizer, cfg, tmp_path, capsys):
    how, words = DAMAGE[name]
    first = snapshot(prepare_arrow(cfg, tokenizer))
    [entry] = cache.entries()
    capsys.readouterr()
    how(entry)
    rebuilt = prepare_arrow(cfg, tokenizer)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("data: ")]
    assert len(lines) == 1 and lines[0].startswith(f"data: cached data {entry} {words}"), err
    assert lines[0].endswith("; rebuilding it") and "reused" not in err and "Traceback" not in err
    fresh = prepare_arrow(dataclasses.replace(cfg, cache=False), tokenizer)
    assert snapshot(rebuilt) == snapshot(fresh) == first
    assert cache.verify(entry, entry.name) is None                     # the entry is whole again
    prepare_arrow(cfg, tokenizer)
    assert "data: prepared data reused from the cache" in capsys.readouterr().err
    assert [p.name for p in cache.cache_root().iterdir()] == [entry.name]   # no trash left behind


def test_the_map_results_datasets_adds_next_to_the_shards_are_not_damage(tokenizer, cfg, capsys):
    prepare_arrow(cfg, tokenizer)
    [entry] = cache.entries()
    (entry / "cache-0123456789abcdef.arrow").write_bytes(b"written by datasets during training")
    (entry / "tmpab12_x9z").write_bytes(b"a map a killed run left")
    capsys.readouterr()
    prepare_arrow(cfg, tokenizer)
    assert "data: prepared data reused from the cache" in capsys.readouterr().err
    (entry / "cache-notes.arrow").write_bytes(b"x")                 # not datasets' name: not the entry's
    prepare_arrow(cfg, tokenizer)
    assert "is damaged: cache-notes.arrow does not belong to it; rebuilding it" in capsys.readouterr().err


def test_every_file_of_an_entry_is_listed_with_its_size_and_hash(tokenizer, cfg):
    prepare_arrow(cfg, tokenizer)
    [entry] = cache.entries()
    meta = json.loads((entry / cache.META).read_text())
    assert meta["key"] == entry.name
    files = sorted(p for p in entry.iterdir() if p.name != cache.META)
    assert meta["files"] == {p.name: [p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()] for p in files}


def test_train_on_a_damaged_cache_says_so_and_trains_on_rebuilt_data(tmp_path, monkeypatch, capfd):
    """`lmtune train` (the CLI's entry point, in this process, one training process) twice on the
    same data with the shard flipped between: the line, exit 0, and the second run's
    data_stats.json equals the first's."""
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Q{i}", "output": f"A{i}"}) + "\n" for i in range(40)))
    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)

    def train(out: str) -> int:
        return main(["train", "--data", str(data), "--output", str(tmp_path / out), "train.max_steps=1",
                     "eval.after_train=false", "distributed.nproc=1"])

    assert train("one") == 0, capfd.readouterr().err
    capfd.readouterr()
    [entry] = [p for p in (tmp_path / "cache" / "data").iterdir() if not p.name.startswith(".")]
    _flip(entry / "train-00000.arrow")
    rc, err = train("two"), capfd.readouterr().err
    assert rc == 0 and "Traceback" not in err, err
    assert f"data: cached data {entry} is damaged: the bytes of train-00000.arrow changed; rebuilding it" in err
    stats = [json.loads((tmp_path / out / "data_stats.json").read_text()) for out in ("one", "two")]
    assert stats[0] == stats[1]


# ---------------------------------------------------------------- lmtune data cache [--clear]

def _holder(key: str):
    """Another process building an entry (holding its .build-* flock) until it is killed."""
    code = ("import sys, time; from lmtune.data import cache; b = cache.new_build_dir(sys.argv[1]); "
            "(b / 'part.arrow').write_bytes(b'x'); print(b, flush=True); time.sleep(600)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", code, key], stdout=subprocess.PIPE, text=True, env=env)
    return proc, Path(proc.stdout.readline().strip())


def test_listing_and_clear_cover_unfinished_builds_and_broken_entries(tokenizer, cfg, tmp_path, capsys):
    prepare_arrow(cfg, tokenizer)
    [entry] = cache.entries()
    root = cache.cache_root()
    cut = dataclasses.replace(cfg, seed=7)                  # a second entry, cut short
    prepare_arrow(cut, tokenizer)
    [damaged] = [e for e in cache.entries() if e != entry]
    _truncate(damaged / "train-00000.arrow")
    left = root / ".build-abcdef12-k9x"                  # a killed run's build: no process holds it
    left.mkdir()
    (left / "train-00000.arrow.partial").write_bytes(b"x" * 1000)
    broken = root / ("b" * 32)
    broken.mkdir()
    (broken / cache.META).write_text("{oops")
    headless = root / ("c" * 32)
    headless.mkdir()
    (headless / "train-00000.arrow").write_bytes(b"x")
    alien = root / ("e" * 32)                          # key-named, meta.json without lmtune's marker
    alien.mkdir()
    (alien / cache.META).write_text('{"written_by": "something else"}')
    mine = root / "my-notes"                            # not lmtune's: never listed, never removed
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    (root / "README").write_text("mine too")
    holder, held = _holder("d" * 32)
    try:
        assert main(["data", "cache"]) == 0
        out = capsys.readouterr().out
        assert f"data cache: {root} (2 entries, " in out and f"  {entry.name}  " in out
        [line] = [x for x in out.splitlines() if damaged.name in x]
        assert " MB  (is damaged: train-00000.arrow has " in line and line.endswith("; rebuilt on use)")
        assert "rebuilt on use" not in next(x for x in out.splitlines() if entry.name in x)
        assert "unfinished builds (left by a killed or failed run):\n  .build-abcdef12-k9x  0.0 MB\n" in out
        assert f"  {held.name}  0.0 MB  (in use by a running lmtune)" in out
        assert (f"broken entries (meta.json missing, unreadable or not lmtune's):\n  {broken.name}  0.0 MB\n"
                f"  {headless.name}  0.0 MB\n  {alien.name}  0.0 MB\n") in out
        assert "my-notes" not in out and "README" not in out
        assert main(["data", "cache", "--clear"]) == 0
        out = capsys.readouterr().out
        assert out.rstrip().endswith("removed 2 entries, 1 unfinished builds, 3 broken entries; kept 1 build(s) in use")
        assert sorted(p.name for p in root.iterdir()) == sorted([held.name, "my-notes", "README"])
        assert (mine / "keep.txt").read_text() == "mine" and (held / "part.arrow").is_file()
    finally:
        holder.kill()
        holder.wait()
    assert main(["data", "cache", "--clear"]) == 0                     # its process is gone: now it goes
    assert "removed 0 entries, 1 unfinished builds, 0 broken entries" in capsys.readouterr().out
    assert sorted(p.name for p in root.iterdir()) == ["README", "my-notes"]


def test_clear_on_a_read_only_cache_exits_2_and_removes_nothing(tokenizer, cfg, capsys):
    """chmod is enough for a normal user; root writes through it, so there the directory is made
    immutable (chattr +i) when the file system allows it, else the case is skipped."""
    prepare_arrow(cfg, tokenizer)
    root = cache.cache_root()
    (root / ".build-0123abcd-x").mkdir()
    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    os.chmod(root, 0o555)
    immutable = False
    try:
        if _can_write(root) and shutil.which("chattr"):
            immutable = subprocess.run(["chattr", "+i", str(root)], capture_output=True).returncode == 0
        if _can_write(root):
            pytest.skip("this user can write through chmod 0555 and chattr +i is not available")
        assert main(["data", "cache", "--clear"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: data cache {root}: read-only, nothing removed\n"), err
        assert f"make it writable (chmod u+w {root})" in err and "Traceback" not in err
        assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(root)], check=True)
        os.chmod(root, 0o755)


def test_a_cache_path_that_is_a_file_exits_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(tmp_path))
    (tmp_path / "data").write_text("not a directory")
    for argv in (["data", "cache"], ["data", "cache", "--clear"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: data cache {tmp_path / 'data'}: is not a directory\n")
    assert (tmp_path / "data").read_text() == "not a directory"
