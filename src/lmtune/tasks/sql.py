"""Text-to-SQL metrics: execution accuracy (run the predicted and the gold query, compare results)
and exact match (whitespace- and case-normalised).

Safety: queries run against a private COPY of the database, opened read-only (`mode=ro` URI and
`PRAGMA query_only`), with an authorizer that allows only reading, a cap on string/blob size, and
a progress handler that aborts runaway queries (step budget and a time limit). Anything but one
SELECT (or WITH ... SELECT) statement scores 0, and so does an error or an empty result: the gold
queries always return rows (the generator guarantees it), so an empty answer is never right.
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path

from lmtune.tasks.base import Task, check_lengths

STEP_CHUNK = 1_000       # VM instructions between progress-handler calls
MAX_STEPS = 5_000_000    # ~0.2 s here; the bundled gold queries need < 10k
TIME_LIMIT_S = 5.0
MAX_ROWS = 10_000        # more rows than this is never a right answer here
MAX_VALUE_BYTES = 1_000_000
_READ_ACTIONS = {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION,
                 getattr(sqlite3, "SQLITE_RECURSIVE", 33)}
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_ORDER_BY = re.compile(r"\bORDER\s+BY\b", re.I)


def normalize_sql(sql: str) -> str:
    """For exact match: one space between tokens, no trailing semicolon, lower case."""
    return " ".join(sql.strip().rstrip(";").split()).lower()


def is_single_select(sql: str) -> bool:
    """Cheap first gate: the statement starts with SELECT or WITH (comments ignored).
    Multiple statements are caught by sqlite3 itself, writes inside WITH by the authorizer."""
    head = _COMMENTS.sub(" ", sql).strip()
    word = head.split(None, 1)[0].upper() if head else ""
    return word in ("SELECT", "WITH")


def extract_sql(generated_text: str) -> str:
    """The first line of the answer (a markdown fence, if any, is dropped)."""
    text = generated_text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        text = text.split("```", 1)[0].strip()
    return text.split("\n", 1)[0].strip()


def _canon(rows: list[tuple]) -> list[tuple]:
    # AVG and friends: 43.4666666 vs 43.46666660000001 must compare equal
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in row) for row in rows]


def results_match(pred: list[tuple], gold: list[tuple], ordered: bool) -> bool:
    if ordered:
        return _canon(pred) == _canon(gold)
    return Counter(_canon(pred)) == Counter(_canon(gold))


def overlap_f1(pred: list[tuple], gold: list[tuple]) -> float:
    """F1 of the two results as multisets of rows: how much of the right answer a wrong query got."""
    common = sum((Counter(_canon(pred)) & Counter(_canon(gold))).values())
    if not common:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


class ReadOnlyDB:
    """A private read-only copy of a SQLite database; use as a context manager."""

    def __init__(self, db_path: Path, max_steps: int = MAX_STEPS, time_limit_s: float = TIME_LIMIT_S):
        self.db_path = Path(db_path)
        self.max_steps, self.time_limit_s = max_steps, time_limit_s
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.conn: sqlite3.Connection | None = None
        self._deadline = 0.0
        self._steps = 0

    def __enter__(self) -> "ReadOnlyDB":
        self._tmp = tempfile.TemporaryDirectory(prefix="lmtune-sql-")
        copy = Path(self._tmp.name) / self.db_path.name
        shutil.copyfile(self.db_path, copy)
        copy.chmod(0o444)
        self.conn = sqlite3.connect(f"{copy.as_uri()}?mode=ro", uri=True, check_same_thread=False)
        self.conn.execute("PRAGMA query_only = ON")
        self.conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
        self.conn.set_authorizer(self._authorize)
        self.conn.set_progress_handler(self._progress, STEP_CHUNK)
        return self

    def __exit__(self, *exc) -> None:
        if self.conn is not None:
            self.conn.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    @staticmethod
    def _authorize(action: int, *_args) -> int:
        return sqlite3.SQLITE_OK if action in _READ_ACTIONS else sqlite3.SQLITE_DENY

    def _progress(self) -> int:
        self._steps += STEP_CHUNK
        # a non-zero return aborts the statement with OperationalError("interrupted")
        return int(self._steps > self.max_steps or time.monotonic() > self._deadline)

    def run(self, sql: str) -> list[tuple] | None:
        """Rows of a single read-only SELECT, or None if it is not one, fails or runs away."""
        if not sql or not is_single_select(sql):
            return None
        self._steps, self._deadline = 0, time.monotonic() + self.time_limit_s
        try:
            cursor = self.conn.execute(sql)
            rows = cursor.fetchmany(MAX_ROWS + 1)
        except (sqlite3.Error, ValueError, OverflowError, MemoryError):
            return None
        return rows if len(rows) <= MAX_ROWS else None


class SqlTask(Task):
    """Text-to-SQL over the bundled database (`files["db"]`) or any SQLite file."""

    def __init__(self, files: dict[str, Path], name: str = "sql", description: str = ""):
        super().__init__(name=name, format="alpaca", files=dict(files), description=description,
                         metrics=("execution_accuracy", "exact_match", "executable"))

    def extract_answer(self, generated_text: str) -> str:
        return extract_sql(generated_text)

    def credit(self, predictions: list[str], references: list[dict | str], metric: str | None = None) -> list[float]:
        """1 for the right result; for a query that runs and returns part of it, half the F1 of its
        rows against the gold rows (so no partial answer ties a right one); 0 otherwise."""
        if metric is not None:
            return super().credit(predictions, references, metric)
        check_lengths(predictions, references)
        out = []
        with ReadOnlyDB(self.files["db"]) as db:
            for pred, ref in zip(predictions, references):
                gold = self.reference(ref)
                pred_rows, gold_rows = db.run((pred or "").strip()), db.run(gold)
                if not pred_rows or gold_rows is None:
                    out.append(0.0)
                elif results_match(pred_rows, gold_rows, ordered=bool(_ORDER_BY.search(gold))):
                    out.append(1.0)
                else:
                    out.append(0.5 * overlap_f1(pred_rows, gold_rows))
        return out

    def score_examples(self, predictions: list[str], references: list[dict | str]) -> list[dict[str, float]]:
        """Per example: execution_accuracy, exact_match, executable (a single SELECT that ran)."""
        check_lengths(predictions, references)
        out = []
        with ReadOnlyDB(self.files["db"]) as db:
            for pred, ref in zip(predictions, references):
                gold = self.reference(ref)
                pred = (pred or "").strip()
                pred_rows = db.run(pred)
                gold_rows = db.run(gold)
                ok = bool(pred_rows) and gold_rows is not None and results_match(
                    pred_rows, gold_rows, ordered=bool(_ORDER_BY.search(gold)))
                out.append({
                    "execution_accuracy": float(ok),
                    "exact_match": float(bool(pred) and normalize_sql(pred) == normalize_sql(gold)),
                    "executable": float(pred_rows is not None),
                })
        return out
