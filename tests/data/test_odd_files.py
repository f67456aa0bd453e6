"""Odd files behind a data path, and one enormous record (docs/reliability.md, "Odd files and
the data cache"). A FIFO, /dev/zero or a socket given to `lmtune data check`, `lmtune train --data`
(or as data.validation / data.test, or inside a data directory) or `lmtune generate --file` exits 2
at once with one message naming the path and what it is; nothing is opened, nothing is written.
The commands run through the CLI's entry point under a timeout (cli_runs.run_cli), so a hang
(reading a FIFO that no one writes, or /dev/zero forever) fails the test instead of stalling the
suite; one case per command runs the real CLI in a fresh interpreter (the exit status the shell
sees). A record over the per-record limit (readers.MAX_RECORD_BYTES) is one `file:line` problem,
read without being held."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from cli_runs import run_cli
from lmtune.cli import main
from lmtune.data import readers
from lmtune.data.readers import LongLine, line_blocks

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"instruction": "Name a colour.", "output": "Blue."}
LIMIT_MIB = readers.MAX_RECORD_BYTES >> 20


def lmtune(*argv: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    try:
        return subprocess.run([sys.executable, "-m", "lmtune", *argv], capture_output=True, text=True, cwd=cwd,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"lmtune {' '.join(argv)} still running after {timeout}s (blocked on an odd file?)")


def odd(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """(a path with a data suffix that is `kind`, the words the message must use for it)."""
    path = tmp_path / f"{kind}.jsonl"
    if kind == "fifo":
        os.mkfifo(path)
        return path, "a FIFO (named pipe)"
    if kind == "zero":
        path.symlink_to("/dev/zero")
        return path, "a character device"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    return path, "a socket"


def refused(proc: subprocess.CompletedProcess | tuple[int, str, str], *expected: str) -> None:
    code, err = (proc.returncode, proc.stderr) if isinstance(proc, subprocess.CompletedProcess) else (proc[0], proc[2])
    assert code == 2, err
    assert "Traceback" not in err and err.count("error: ") == 1, err
    for text in expected:
        assert text in err, err


def cli(capfd, *argv: str, cwd: Path) -> tuple[int, str, str]:
    return run_cli(capfd, *argv, cwd=cwd, timeout=120)


def test_the_real_process_exits_2_at_once_for_each_command(tmp_path):
    """data check, train --data and generate --file on a FIFO, each in a fresh interpreter."""
    path, what = odd(tmp_path, "fifo")
    out = tmp_path / "run"
    refused(lmtune("data", "check", str(path), cwd=tmp_path), f"{path}: not a regular file: {what}")
    refused(lmtune("train", "--data", str(path), "--output", str(out), cwd=tmp_path),
            f"data.train: {path}: not a regular file: {what}")
    refused(lmtune("generate", "tiny", "--file", str(path), cwd=tmp_path), f"--file {path}: not a regular file: {what}")
    assert not out.exists()


@pytest.mark.parametrize("kind", ["fifo", "zero", "socket"])
def test_data_check_refuses_an_odd_file(tmp_path, capfd, kind):
    path, what = odd(tmp_path, kind)
    refused(cli(capfd, "data", "check", str(path), cwd=tmp_path),
            f"{path}: not a regular file: {what}; give a data file, or a directory of them")


def test_data_check_refuses_dev_zero_itself_and_an_odd_file_inside_a_directory(tmp_path, capfd):
    refused(cli(capfd, "data", "check", "/dev/zero", cwd=tmp_path), "/dev/zero: not a regular file: a character device")
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    os.mkfifo(folder / "b.jsonl")
    refused(cli(capfd, "data", "check", str(folder), cwd=tmp_path), f"{folder / 'b.jsonl'}: not a regular file: a FIFO")


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_train_refuses_an_odd_data_file_before_loading_anything(tmp_path, capfd, kind):
    path, what = odd(tmp_path, kind)
    out = tmp_path / "run"
    refused(cli(capfd, "train", "--data", str(path), "--output", str(out), cwd=tmp_path),
            f"data.train: {path}: not a regular file: {what}")
    assert not out.exists()


def test_train_refuses_odd_validation_test_and_replay_files_by_config_key(tmp_path, capfd):
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps({**GOOD, "output": f"Blue {i}."}) + "\n" for i in range(20)))
    fifo, zero = odd(tmp_path, "fifo")[0], odd(tmp_path, "zero")[0]
    out = tmp_path / "run"
    proc = cli(capfd, "train", "--data", str(train), f"data.validation=[{fifo}]", f"data.test=[{zero}]",
                  "data.replay.ratio=0.5", f"data.replay.source={fifo}", "--output", str(out), cwd=tmp_path)
    refused(proc, "3 data paths cannot be read as data", f"data.validation: {fifo}: not a regular file: a FIFO",
            f"data.test: {zero}: not a regular file: a character device",
            f"data.replay.source: {fifo}: not a regular file: a FIFO")
    assert not out.exists()


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_generate_refuses_an_odd_prompt_file(tmp_path, capfd, kind):
    path, what = odd(tmp_path, kind)
    refused(cli(capfd, "generate", "tiny", "--file", str(path), cwd=tmp_path),
            f"--file {path}: not a regular file: {what}")


def test_eval_refuses_an_odd_test_file(tmp_path, capfd):
    path, what = odd(tmp_path, "fifo")
    out = tmp_path / "eval-out"
    refused(cli(capfd, "eval", "tiny", "--test", str(path), "--out", str(out), cwd=tmp_path),
            f"--test {path}: not a regular file: {what}")
    assert not out.exists()


# ---------------------------------------------------------------- one enormous record

def _big_jsonl(path: Path, mib: int = 20) -> Path:
    big = json.dumps({"instruction": "x" * (mib << 20), "output": "y"})
    path.write_text(json.dumps(GOOD) + "\n" + big + "\n" + json.dumps({"instruction": 5}) + "\n")
    return path


def test_data_check_reports_a_20_mib_line_by_file_and_line(tmp_path, capsys):
    path = _big_jsonl(tmp_path / "big.jsonl")
    assert main(["data", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"  {path}:2: record of 20.0 MiB, over the limit of {LIMIT_MIB} MiB per record (shorten or split it" in err
    assert f"  {path}:3: expected a string, got a number (instruction)" in err      # line numbers carry on
    assert "3 problems in 3 records" in err and "Traceback" not in err


def test_csv_and_parquet_records_over_the_limit_are_reported_too(tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    huge = "x" * (readers.MAX_RECORD_BYTES + 1)
    csv_path = tmp_path / "d.csv"
    csv_path.write_text(f"instruction,output\nq,{'a' * (1 << 20)}\n{huge},a\n")   # 1 MiB: fine
    pq_path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"instruction": ["q", huge], "output": ["a", "b"]}), pq_path)
    for path, where in ((csv_path, f"{csv_path}:3: a field of the record"), (pq_path, f"{pq_path}:row 1: record "
                                                                                      "of 8.0 MiB")):
        assert main(["data", "check", str(path)]) == 2
        err = capsys.readouterr().err
        assert f"  {where}, over the limit of {LIMIT_MIB} MiB per record" in err, err
        assert err.count(" over the limit ") == 1 and "1 problem in " in err, err


def test_train_stops_on_a_20_mib_line_with_its_place(tmp_path, monkeypatch, capfd):
    """`lmtune train` through the CLI's entry point, in this process (the real process's exit without
    a traceback is covered by the FIFO cases above)."""
    path = _big_jsonl(tmp_path / "big.jsonl")
    out = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    rc = main(["train", "--data", str(path), "--output", str(out), "distributed.nproc=1"])
    err = capfd.readouterr().err
    assert rc == 2 and "Traceback" not in err and err.count("error: ") == 1, err
    assert f"{path}:2: record of 20.0 MiB, over the limit of {LIMIT_MIB} MiB per record" in err, err
    assert not out.exists()


def test_generate_refuses_a_20_mib_prompt_line(tmp_path, capfd):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "hi"}\n' + json.dumps({"prompt": "x" * (20 << 20)}) + "\n")
    refused(cli(capfd, "generate", "tiny", "--file", str(path), cwd=tmp_path),
            f"{path}:2: record of 20.0 MiB, over the limit of {LIMIT_MIB} MiB per record")


def test_the_limit_is_in_data_check_help(capsys):
    code, out, _ = run_cli(capsys, "data", "check", "--help")
    assert code == 0 and f"{LIMIT_MIB} MiB" in " ".join(out.split())


class EndlessLine:
    """A binary file of `size` bytes with no newline, made up as it is read (like /dev/zero)."""

    def __init__(self, size: int, tail: bytes = b""):
        self.left, self.tail = size, tail

    def read(self, n: int) -> bytes:
        if self.left <= 0:
            tail, self.tail = self.tail, b""
            return tail[:n]
        take = min(n, self.left)
        self.left -= take
        return b"x" * take


def test_a_line_without_end_is_read_through_in_bounded_memory():
    size = 256 << 20
    tracemalloc.start()
    try:
        pieces = list(line_blocks(EndlessLine(size, b'\n{"a": 1}\n'), "f.jsonl", 4 << 20))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert pieces == [LongLine("f.jsonl", 1, size), (b'{"a": 1}\n', 2, 1)]
    assert peak < 4 * readers.MAX_RECORD_BYTES          # a held line would be 256 MiB


@pytest.mark.parametrize("block", [3, 5, 64])
def test_lines_up_to_the_limit_are_kept_and_longer_ones_reported(tmp_path, block):
    import io

    data = b"a" * 10 + b"\n" + b"b" * 11 + b"\r\n" + b"\n" + b"c" * 30 + b"\nd\n" + b"e" * 12
    pieces = list(line_blocks(io.BytesIO(data), "f", block, limit=10))
    kept = b"".join(p[0] for p in pieces if isinstance(p, tuple))
    assert [p for p in pieces if isinstance(p, LongLine)] == [LongLine("f", 2, 12), LongLine("f", 4, 30),
                                                               LongLine("f", 6, 12)]
    assert kept == b"a" * 10 + b"\n" + b"\n" + b"d\n"
    numbered = [(start + i, line) for block, start, n in (p for p in pieces if isinstance(p, tuple))
                for i, line in enumerate(block.splitlines())]
    assert numbered == [(1, b"a" * 10), (3, b""), (5, b"d")]


# ---------------------------------------------------------------- the cache's hashing path

def _in_a_thread(fn, timeout: float = 30):
    """fn()'s result; fails (instead of hanging the suite) if fn blocks, e.g. opening a FIFO."""
    import threading

    out = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still running after {timeout}s: blocked on an odd file?"
    return out[0]


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_the_cache_key_never_opens_an_odd_file_and_keys_nothing(tmp_path, kind):
    import tiny_tokenizers as tt
    from lmtune.config import DataConfig
    from lmtune.data import cache

    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(GOOD) + "\n")
    path, _ = odd(tmp_path, kind)
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps(GOOD) + "\n")
    (folder / "b.jsonl").symlink_to(path)
    tok = tt.gpt2_style()
    for files in ({"train": [str(good), str(path)]}, {"train": [str(folder)]},
                  {"train": [str(good)], "validation": [str(path)]}):
        cfg = DataConfig(train=files["train"])
        assert _in_a_thread(lambda: cache.data_key(cfg, files, tok, None)) is None
    # and the key of the good file alone is one (what a missing or odd file must not share)
    assert cache.data_key(DataConfig(train=[str(good)]), {"train": [str(good)]}, tok, None) is not None
    assert cache.data_key(DataConfig(train=[str(good)]), {"train": [str(good), str(tmp_path / "gone.jsonl")]},
                          tok, None) is None
