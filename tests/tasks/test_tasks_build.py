"""Bundled task files: reproducible, deduplicated across splits, well formed, registered."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from cli_runs import run_cli
from lmtune.errors import UserError
from lmtune.tasks import ASSETS, get_task, probe_file, task_files, task_names

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))   # the build-time generators (scripts/task_gen/)
from task_gen.build import build_all  # noqa: E402
SPLITS = ("train", "validation", "test")
MIN_SIZE = {"train": 2000, "validation": 200, "test": 200}


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def db_dump(path: Path) -> list[str]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def sql_shape(sql: str) -> str:
    return re.sub(r"\b\d+\b", "N", re.sub(r"'[^']*'", "S", sql))


def test_generator_reproduces_the_committed_files(tmp_path):
    build_all(tmp_path)
    # general/replay*.jsonl come from scripts/build_replay.py, checked by tests/train/test_replay.py
    committed = sorted(p.relative_to(ASSETS) for p in ASSETS.rglob("*")
                       if p.is_file() and not p.name.startswith("replay"))
    rebuilt = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert rebuilt == committed
    for rel in committed:
        if rel.suffix == ".sqlite":
            # SQLite stamps its library version in the header: compare content everywhere,
            # bytes where the library is the same
            assert db_dump(tmp_path / rel) == db_dump(ASSETS / rel)
            if (tmp_path / rel).read_bytes()[96:100] == (ASSETS / rel).read_bytes()[96:100]:
                assert sha(tmp_path / rel) == sha(ASSETS / rel)
        else:
            assert sha(tmp_path / rel) == sha(ASSETS / rel), f"{rel} differs: rerun scripts/build_tasks.py"


def test_another_seed_gives_other_data(tmp_path):
    build_all(tmp_path, seed=7)
    assert sha(tmp_path / "sql" / "test.jsonl") != sha(ASSETS / "sql" / "test.jsonl")


def test_registry():
    assert task_names() == ["sql", "json", "catalogue"]
    assert set(task_files("sql")) == {"train", "validation", "test", "db"}
    assert set(task_files("json")) == set(SPLITS)
    assert probe_file() == task_files("general")["probe"]
    sql, js, generic = get_task("sql"), get_task("json"), get_task("generic")
    assert (sql.name, sql.format, js.name, js.format) == ("sql", "alpaca", "json", "chat")
    assert sql.files == task_files("sql") and js.files == task_files("json")
    with pytest.raises(UserError, match="unknown task 'spider'"):
        get_task("spider")
    with pytest.raises(UserError, match="not found"):
        get_task("sql", db="/nonexistent/x.sqlite")
    assert generic.score(["the cat sat on the mat", "b"], ["the cat sat on a mat", {"output": "b"}]) == \
        pytest.approx({"exact_match": 0.5, "rouge_l": (5 / 6 + 1) / 2})


def test_importing_tasks_stays_light():
    code = ("import sys, lmtune.tasks; t = lmtune.tasks.get_task('sql'); "
            "print(sorted(m for m in ('torch', 'transformers', 'rouge_score') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("task", ["sql", "json"])
def test_split_sizes_and_no_overlap(task):
    files = task_files(task)
    splits = {s: load(files[s]) for s in SPLITS}
    for s in SPLITS:
        assert len(splits[s]) >= MIN_SIZE[s]

    def prompt(r):  # the whole model input, whitespace/case-normalised
        text = r["instruction"] + "\n" + r["input"] if task == "sql" else r["messages"][1]["content"]
        return " ".join(text.lower().split())

    def answer(r):
        return r["output"] if task == "sql" else r["messages"][2]["content"]

    for key in (prompt, answer):
        seen: dict[str, str] = {}
        for s in SPLITS:
            for r in splits[s]:
                k = key(r)
                assert k not in seen, f"{key.__name__} repeated ({seen.get(k)} and {s}): {k[:80]}"
                seen[k] = s


def test_sql_records_are_learnable():
    files = task_files("sql")
    train = load(files["train"])
    train_shapes = {sql_shape(r["output"]) for r in train}
    for split in SPLITS:
        for r in load(files[split]):
            assert set(r) == {"instruction", "input", "output"}
            sql = r["output"]
            assert "\n" not in sql and ";" not in sql and '"' not in sql and len(sql) <= 200
            assert sql.startswith("SELECT ")
            assert not re.search(r"\b(select|from|where|join|order by|group by|limit)\b", sql)
            for literal in re.findall(r"'([^']*)'", sql):  # slot values copied from the question
                assert literal in r["instruction"], (literal, r["instruction"])
            for year in re.findall(r"\b20\d\d\b", sql):
                assert year in r["instruction"]
            # test and validation only hold new values in query shapes seen in training
            assert sql_shape(sql) in train_shapes


def test_probe_is_general_text_no_task_uses():
    probe = load(probe_file())
    assert 100 <= len(probe) <= 200
    assert all(set(r) == {"text"} and len(r["text"]) > 100 for r in probe)
    texts = {r["text"] for r in probe}
    assert len(texts) == len(probe)
    task_text = "".join(p.read_text(encoding="utf-8") for t in task_names()
                        for s, p in task_files(t).items() if s != "db")
    sentences = {s for t in texts for s in re.split(r"(?<=\.) ", t)}
    assert not [s for s in sentences if s in task_text]


DATA_CMD = ROOT / "src" / "lmtune" / "commands" / "data.py"
TASK_FILES = [f"{t}/{s}.jsonl" for t in ("sql", "json") for s in SPLITS] + ["general/probe.jsonl"]


@pytest.mark.skipif(not DATA_CMD.exists(), reason="lmtune data check not built yet (commands/data.py)")
@pytest.mark.parametrize("rel", TASK_FILES)
def test_task_files_pass_data_check(rel, capsys):
    code, out, err = run_cli(capsys, "data", "check", ASSETS / rel)
    assert code == 0, out + err
