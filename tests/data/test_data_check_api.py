"""lmtune.data.check.check_data, the data check's one public function: every line goes through
`emit` (nothing printed behind its back), bad records end in one DataError listing them, and
`lmtune data check` prints exactly what the function emits."""

from __future__ import annotations

import json

import pytest

from lmtune.cli import main
from lmtune.data.check import CheckOptions, check_data
from lmtune.errors import DataError


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


ROWS = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(4)] + [{"instruction": "q1", "output": "a1"}]


def test_check_data_emits_every_line_and_prints_nothing_itself(tmp_path, capsys):
    path = _write(tmp_path / "d.jsonl", ROWS)
    lines: list[str] = []
    assert check_data([path], CheckOptions(samples=1), lines.append) == 0
    assert capsys.readouterr().out == ""
    assert lines[0] == path and lines[-1] == "ok: 4 examples, no problems"
    assert f"  duplicates  1, dropped in training: equal up to whitespace (e.g. {path}:5 repeats {path}:2)" in lines
    assert any(line.startswith("sample ") for line in lines)


def test_check_data_raises_one_error_listing_every_bad_record(tmp_path):
    path = _write(tmp_path / "bad.jsonl", ROWS[:2] + [{"instruction": "q", "output": 3}, {"instruction": "q9"}])
    lines: list[str] = []
    with pytest.raises(DataError) as err:
        check_data([path], CheckOptions(format="alpaca"), lines.append)
    assert err.value.args[0] == "2 problems in 4 records; fix each line below"
    assert [p.split(":")[1] for p in err.value.problems] == ["3", "4"]
    assert "  records     4 read, 2 valid" in lines


def test_cli_prints_what_check_data_emits(tmp_path, capsys):
    path = _write(tmp_path / "d.jsonl", ROWS)
    lines: list[str] = []
    check_data([path], CheckOptions(samples=2), lines.append)
    assert main(["data", "check", path, "--samples", "2"]) == 0
    assert capsys.readouterr().out == "".join(line + "\n" for line in lines)
