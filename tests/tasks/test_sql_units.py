"""The SQL scorer's small parts with literal expectations (lmtune/tasks/sql.py): answer extraction,
normalisation, float rounding, the row cap, the step budget, closing and the task's metadata.
Written against the survivors of scripts/mutation.sh tasks/sql (benchmarks/README.md)."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from lmtune.tasks import get_task, task_files
from lmtune.tasks.sql import MAX_ROWS, STEP_CHUNK, ReadOnlyDB, extract_sql, is_single_select, normalize_sql, \
    results_match

RUNAWAY = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT COUNT(*) FROM r"


def _rows(n: int) -> str:
    return f"WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r WHERE x < {n}) SELECT x FROM r"


def test_normalize_sql_literal():
    assert normalize_sql("  SELECT  Name\n FROM t ;; ") == "select name from t"
    assert normalize_sql("SELECT a FROM TAX;") == "select a from tax"


def test_a_leading_comment_does_not_hide_the_select():
    assert is_single_select("/* why */SELECT 1") and is_single_select("-- note\nWITH a AS (SELECT 1) SELECT * FROM a")
    assert not is_single_select("/* SELECT */ DELETE FROM t") and not is_single_select("-- only a comment")


@pytest.mark.parametrize("text, expected", [
    ("SELECT 1\nexplanation\nmore", "SELECT 1"),
    ("```sql query\nSELECT 1\n```", "SELECT 1"),      # the fence line is dropped whole
    ("```\nSELECT 1```", "SELECT 1"),                 # closing fence on the same line
    ("```\nSELECT 1 ``` note ```", "SELECT 1"),       # text after the first closing fence is dropped
    ("```", ""),                                      # a fence and nothing else
    ("  SELECT 2  ", "SELECT 2"),
])
def test_extract_sql_literal(text, expected):
    assert extract_sql(text) == expected
    assert get_task("sql").extract_answer(text) == expected


def test_floats_compare_rounded_to_six_decimals():
    assert results_match([(1.0000001,)], [(1.0000002,)], ordered=True)
    assert not results_match([(1.4,)], [(1.0,)], ordered=True)
    assert not results_match([(1.00001,)], [(1.00002,)], ordered=True)


def test_row_cap_is_exact():
    with ReadOnlyDB(task_files("sql")["db"]) as db:
        assert len(db.run(_rows(MAX_ROWS))) == MAX_ROWS
        assert db.run(_rows(MAX_ROWS + 1)) is None


def test_step_budget_stops_at_the_first_check_past_it():
    """The time limit is set far away: only the step count can stop this query, at the first
    progress check past the budget (the count restarts at 0 for every query)."""
    with ReadOnlyDB(task_files("sql")["db"], max_steps=20 * STEP_CHUNK, time_limit_s=60.0) as db:
        for _ in range(2):
            assert db.run(RUNAWAY) is None
            assert db._steps == 21 * STEP_CHUNK


def test_the_copy_is_read_only_on_disk_and_closed_on_exit():
    with ReadOnlyDB(task_files("sql")["db"]) as db:
        db_dir = Path(db._tmp.name)
        assert stat.S_IMODE((db_dir / db.db_path.name).stat().st_mode) == 0o444
    with pytest.raises(Exception, match="closed"):
        db.conn.execute("SELECT 1")
    assert not db_dir.exists()


def test_the_connection_can_be_used_from_another_thread():
    out = []
    with ReadOnlyDB(task_files("sql")["db"]) as db:
        t = threading.Thread(target=lambda: out.append(db.run("SELECT name FROM customers WHERE city = 'Berlin'")))
        t.start()
        t.join()
    assert out and out[0]


def test_task_metadata():
    task = get_task("sql")
    assert task.name == "sql" and task.format == "alpaca"
    assert task.metrics == ("execution_accuracy", "exact_match", "executable")
    assert task.description
