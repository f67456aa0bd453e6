"""The text-to-SQL task (lmtune/tasks/sql.py): right answers score 1, anything else 0, and the
database never changes; then the scorer's small parts with literal expectations: answer extraction,
normalisation, float rounding, the row cap, the step budget, closing and the task's metadata. The
sandbox's layers one by one: test_sql_sandbox_layers.py."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
import sys
import threading
from pathlib import Path

import pytest

from lmtune.tasks import get_task, task_files
from lmtune.tasks.sql import (MAX_ROWS, STEP_CHUNK, ReadOnlyDB, extract_sql, is_single_select, normalize_sql,
                              results_match)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))   # scripts/task_gen/
from task_gen.sql_gen import is_fair  # noqa: E402

GOLD = "SELECT name FROM customers WHERE city = 'Berlin'"
GOLD_ORDERED = "SELECT name FROM products WHERE category = 'Garden' ORDER BY price DESC"


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def task():
    return get_task("sql")


def one(task, pred: str, gold: str = GOLD) -> dict[str, float]:
    return task.score([pred], [{"instruction": "q", "input": "", "output": gold}])


def test_right_query_scores_one(task):
    assert one(task, GOLD) == {"execution_accuracy": 1.0, "exact_match": 1.0, "executable": 1.0}
    # same rows, different spelling: execution right, exact match wrong
    other = "SELECT c.name FROM customers c WHERE c.city IN ('Berlin')"
    assert one(task, other) == {"execution_accuracy": 1.0, "exact_match": 0.0, "executable": 1.0}
    # WITH ... SELECT is a read-only query too
    cte = "WITH b AS (SELECT name, city FROM customers) SELECT name FROM b WHERE city = 'Berlin'"
    assert one(task, cte)["execution_accuracy"] == 1.0


def test_exact_match_ignores_case_whitespace_and_semicolon(task):
    pred = "select  name from customers\twhere city = 'berlin' ;"
    assert normalize_sql(pred) == normalize_sql(GOLD)
    assert one(task, pred)["exact_match"] == 1.0
    assert one(task, pred)["execution_accuracy"] == 0.0  # 'berlin' matches no row


def test_wrong_and_invalid_queries_score_zero(task):
    wrong = one(task, "SELECT name FROM customers WHERE city = 'Paris'")
    assert wrong == {"execution_accuracy": 0.0, "exact_match": 0.0, "executable": 1.0}
    assert one(task, "SELECT nme FROM customers")["executable"] == 0.0
    assert one(task, "SELEC name FROM customers")["execution_accuracy"] == 0.0
    assert one(task, "SELECT name, city FROM customers WHERE city = 'Berlin'")["execution_accuracy"] == 0.0


WRITES = [
    "",
    "   ",
    "-- SELECT name FROM customers",
    "DELETE FROM customers",
    "DROP TABLE orders",
    "UPDATE customers SET city = 'Berlin'",
    "INSERT INTO cities VALUES ('Atlantis', 'Sea')",
    "CREATE TABLE t (x)",
    "WITH x AS (SELECT 1) DELETE FROM customers",
    "PRAGMA user_version = 7",
    "VACUUM",
    "REPLACE INTO cities VALUES ('Berlin', 'France')",
    f"{GOLD}; DROP TABLE customers",
    f"{GOLD}; {GOLD}",
    f"DROP TABLE customers; {GOLD}",
    "SELECT load_extension('evil')",
    "EXPLAIN " + GOLD,
]


@pytest.mark.parametrize("pred", WRITES)
def test_non_select_scores_zero_and_db_unchanged(task, pred):
    assert one(task, pred) == {"execution_accuracy": 0.0, "exact_match": 0.0, "executable": 0.0}
    # The original cannot change (queries run on a private copy), so check the copy the query ran on
    with ReadOnlyDB(task.files["db"]) as db:
        copy = Path(db._tmp.name) / db.db_path.name
        before = sha(copy)
        assert db.run(pred) is None
        assert sha(copy) == before


def test_attach_and_vacuum_into_cannot_create_files(task, tmp_path):
    before = sha(task.files["db"])
    for pred in (f"ATTACH DATABASE '{tmp_path / 'evil.db'}' AS e",
                 f"VACUUM INTO '{tmp_path / 'copy.db'}'"):
        assert one(task, pred)["executable"] == 0.0
    assert list(tmp_path.iterdir()) == []
    assert sha(task.files["db"]) == before


def test_runaway_and_huge_values_are_stopped():
    runaway = "WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r) SELECT COUNT(*) FROM r"
    with ReadOnlyDB(task_files("sql")["db"], max_steps=50_000) as db:
        assert db.run(runaway) is None
        assert db.run("SELECT zeroblob(2000000000)") is None
        assert db.run(GOLD)  # the connection still works afterwards


def test_order_by_in_gold_makes_order_matter(task):
    asc = GOLD_ORDERED.replace(" DESC", "")
    assert one(task, GOLD_ORDERED, GOLD_ORDERED)["execution_accuracy"] == 1.0
    assert one(task, asc, GOLD_ORDERED)["execution_accuracy"] == 0.0
    # without ORDER BY in the gold, any order of the same rows is right
    unordered_gold = GOLD_ORDERED.replace(" ORDER BY price DESC", "")
    assert one(task, asc, unordered_gold)["execution_accuracy"] == 1.0


def test_float_results_compare_rounded_and_references_may_be_strings(task):
    gold = "SELECT AVG(age) FROM customers WHERE city = 'Berlin'"
    pred = "SELECT SUM(age) * 1.0 / COUNT(*) FROM customers WHERE city = 'Berlin'"
    assert task.score([pred], [gold])["execution_accuracy"] == 1.0


def test_empty_result_never_matches(tmp_path):
    db = tmp_path / "tiny.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    tiny = get_task("sql", db=db)
    assert tiny.score(["SELECT x FROM t"], ["SELECT x FROM t"])["execution_accuracy"] == 0.0


def test_generator_rejects_order_dependent_and_trivial_queries(tmp_path):
    db = tmp_path / "ties.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (name TEXT, age INTEGER)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [("a", 30), ("b", 30), ("c", 40)])
    conn.commit()
    assert not is_fair(conn, "SELECT name FROM t ORDER BY age LIMIT 1")  # tie: a or b
    assert is_fair(conn, "SELECT name FROM t ORDER BY age DESC LIMIT 1")
    assert not is_fair(conn, "SELECT name FROM t WHERE age > 50")  # empty
    assert not is_fair(conn, "SELECT COUNT(*) FROM t WHERE age > 50")  # only a zero
    assert not is_fair(conn, "SELECT COUNT(*) FROM t WHERE age > 35")  # [(1,)]: SELECT 1 would match
    conn.close()


def test_every_gold_query_returns_rows_and_scores_one(task):
    for split in ("train", "validation", "test"):
        records = [json.loads(line) for line in task.files[split].open(encoding="utf-8")]
        with ReadOnlyDB(task.files["db"]) as db:
            empty = [r["output"] for r in records if not db.run(r["output"])]
        assert empty == [], f"{split}: gold queries without rows: {empty[:3]}"
    scores = task.score([r["output"] for r in records], records)  # test split
    assert scores == {"execution_accuracy": 1.0, "exact_match": 1.0, "executable": 1.0}
    assert task.score(["SELECT 1"] * len(records), records)["execution_accuracy"] == 0.0


def test_extract_answer_takes_the_first_line():
    assert extract_sql(f"  {GOLD}\nThis query lists the customers.") == GOLD
    assert extract_sql(f"```sql\n{GOLD}\n```\nDone.") == GOLD
    assert extract_sql("\n\n") == ""


def test_length_mismatch_is_an_error(task):
    with pytest.raises(ValueError, match="2 predictions for 1 references"):
        task.score([GOLD, GOLD], [GOLD])


# ---------------------------------------------------------------- the scorer's small parts

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
