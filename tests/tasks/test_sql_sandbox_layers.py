"""The SQL sandbox's layers, each shown to hold on its own (lmtune/tasks/sql.py): the authorizer,
the read-only connection (mode=ro and PRAGMA query_only), and the private copy. With all layers on,
a write can never reach the original file, so "the database is unchanged" alone proves nothing
about a layer: here each one is tested with the others removed, on real SQLite."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from lmtune.tasks import task_files
from lmtune.tasks.sql import ReadOnlyDB

# A read that only the authorizer refuses: pragma table-valued functions are SELECTs that the
# read-only connection runs happily (they reveal the schema and the copy's path).
PRAGMA_SELECT = "SELECT name FROM pragma_table_info('customers')"
WRITES = ["INSERT INTO cities VALUES ('Atlantis', 'Sea')", "DELETE FROM customers", "CREATE TABLE t (x)",
          "WITH x AS (SELECT 1) DELETE FROM customers", "PRAGMA user_version = 7"]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def db_file(tmp_path) -> Path:
    """A writable copy of the bundled database (the tests below write to it on purpose)."""
    path = tmp_path / "shop.db"
    path.write_bytes(task_files("sql")["db"].read_bytes())
    return path


def _copy_path(db: ReadOnlyDB) -> Path:
    return Path(db._tmp.name) / db.db_path.name


def test_only_the_authorizer_refuses_a_pragma_select(db_file):
    with ReadOnlyDB(db_file) as db:
        assert db.run(PRAGMA_SELECT) is None
        assert db.run("SELECT name FROM customers WHERE city = 'Berlin'")  # reads still pass
        db.conn.set_authorizer(None)  # the read-only connection and the copy remain: they let it through
        assert ("name",) in db.run(PRAGMA_SELECT)


@pytest.mark.parametrize("sql", WRITES)
def test_the_authorizer_alone_refuses_writes(db_file, sql):
    """On an ordinary writable connection to the original file, with only the authorizer."""
    before = sha(db_file)
    conn = sqlite3.connect(db_file)
    conn.set_authorizer(ReadOnlyDB._authorize)
    with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
        conn.execute(sql)
    conn.commit()
    conn.close()
    assert sha(db_file) == before
    conn = sqlite3.connect(db_file)  # the same statement without the authorizer does write
    conn.execute(sql)
    conn.commit()
    conn.close()
    assert sha(db_file) != before


@pytest.mark.parametrize("sql", WRITES)
def test_the_read_only_connection_alone_refuses_writes(db_file, sql):
    """The authorizer removed, then query_only switched off too: mode=ro still refuses."""
    with ReadOnlyDB(db_file) as db:
        copy = _copy_path(db)
        before = sha(copy)
        db.conn.set_authorizer(None)
        assert db.conn.execute("PRAGMA query_only").fetchone() == (1,)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            db.conn.execute(sql)
        db.conn.execute("PRAGMA query_only = OFF")
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            db.conn.execute(sql)
        assert sha(copy) == before


def test_query_only_alone_refuses_writes(db_file):
    conn = sqlite3.connect(db_file)  # writable connection, only the pragma that ReadOnlyDB sets
    conn.execute("PRAGMA query_only = ON")
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute(WRITES[0])
    conn.execute("PRAGMA query_only = OFF")
    conn.execute(WRITES[0])  # the same connection writes once the pragma is off
    conn.close()


def test_queries_run_on_a_private_copy_that_is_removed_afterwards(db_file):
    """With every other layer removed (a writable connection to the file ReadOnlyDB opened), a
    write changes the copy, never the original."""
    before = sha(db_file)
    with ReadOnlyDB(db_file) as db:
        db.conn.set_authorizer(None)
        (_, _, opened), = db.conn.execute("PRAGMA database_list").fetchall()
        copy = _copy_path(db)
        assert Path(opened) == copy and copy.resolve() != db_file.resolve()
        assert sha(copy) == before
        copy.chmod(0o644)
        writer = sqlite3.connect(opened)
        writer.execute(WRITES[1])
        writer.commit()
        writer.close()
        assert sha(copy) != before
    assert sha(db_file) == before
    assert not copy.exists() and not copy.parent.exists()
