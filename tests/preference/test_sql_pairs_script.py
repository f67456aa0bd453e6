"""scripts/sql_pairs.py: the bundled SQL task's gold answers chosen, a variant the database answers
differently rejected; with --cut, the same variants ending at their first wrong word."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lmtune.rl.pairs import cut_at_mistake
from lmtune.tasks import task_files
from lmtune.tasks.sql import ReadOnlyDB, results_match

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "sql_pairs.py"


def _pairs(out: Path, *flags: str) -> list[dict]:
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--n", "30", *flags],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_rejected_answers_differ_by_execution_and_cut_keeps_their_first_mistake(tmp_path):
    whole, cut = _pairs(tmp_path / "whole.jsonl"), _pairs(tmp_path / "cut.jsonl", "--cut")
    assert len(whole) == len(cut) == 30
    gold = {}
    for line in task_files("sql")["train"].read_text().splitlines():
        r = json.loads(line)
        gold[f"{r['instruction']}\n\n{r['input']}"] = r["output"]
    with ReadOnlyDB(task_files("sql")["db"]) as db:
        for w in whole:
            assert w["chosen"] == gold[w["prompt"]]
            got = db.run(w["rejected"])
            assert got is not None and not results_match(got, db.run(w["chosen"]), "ORDER BY" in w["chosen"])
    # the same questions and variants (same seed); --cut ends each at its first wrong word
    assert [c["prompt"] for c in cut] == [w["prompt"] for w in whole]
    assert [c["rejected"] for c in cut] == [cut_at_mistake(w["chosen"], w["rejected"]) for w in whole]
    assert sum(len(c["rejected"]) < len(w["rejected"]) for c, w in zip(cut, whole)) >= 10   # 16 of these 30
    assert [c.get("rejected_partial", False) for c in cut] == [c["rejected"] != w["rejected"] for c, w in zip(cut, whole)]
    assert not any("rejected_partial" in w for w in whole)
    # an existing --out is refused, untouched
    before = (tmp_path / "cut.jsonl").read_text()
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "cut.jsonl")], capture_output=True)
    assert done.returncode == 2 and (tmp_path / "cut.jsonl").read_text() == before
