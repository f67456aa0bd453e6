"""`lmtune data check` on bad input: every problem as `file:line: what is wrong (field)`, exit 2.

Each case writes a real file to tmp_path and runs the real CLI (lmtune.cli.main); the expected
lines are exact, with FILE standing for the file's path.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmtune.cli import main

ROOT = Path(__file__).resolve().parents[2]
GOOD = json.dumps({"instruction": "Name a colour.", "input": "", "output": "Blue."})
CHAT_OK = {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}


def jl(*records) -> bytes:
    """JSON Lines from records (dicts are dumped, str/bytes are written as they are)."""
    out = b""
    for r in records:
        line = r if isinstance(r, bytes) else (r if isinstance(r, str) else json.dumps(r)).encode()
        out += line + b"\n"
    return out


def chat(*messages, key="messages") -> dict:
    return {key: list(messages)}


# (case id, file name, file bytes, extra CLI args, expected problem lines)
CASES = [
    ("malformed-json", "d.jsonl", jl(GOOD, '{"instruction": "a", "output": "b"'), [],
     ["FILE:2: malformed JSON: Expecting ',' delimiter (at the end of the line)"]),
    ("malformed-json-mid", "d.jsonl", jl(GOOD, '{"instruction": "a" "output": "b"}'), [],
     ["FILE:2: malformed JSON: Expecting ',' delimiter (column 21)"]),
    ("not-utf8", "d.jsonl", jl(GOOD, b'{"instruction": "caf\xe9", "output": "b"}'), [],
     ["FILE:2: not UTF-8: byte 0xe9 at column 21 (re-save the file as UTF-8)"]),
    ("missing-field", "d.jsonl", jl(GOOD, {"instruction": "Add 2 and 3."}), [],
     ["FILE:2: missing field (output)"]),
    ("empty-field", "d.jsonl", jl(GOOD, {"instruction": "  ", "output": "x"}), [],
     ["FILE:2: empty string (instruction)"]),
    ("wrong-type", "d.jsonl", jl(GOOD, {"instruction": "Legs of a spider?", "output": 8}), [],
     ["FILE:2: expected a string, got a number (output)"]),
    ("null-value", "d.jsonl", jl(GOOD, {"instruction": None, "output": "x"}), [],
     ["FILE:2: null value, expected a string (instruction)"]),
    ("optional-wrong-type", "d.jsonl", jl(GOOD, {"instruction": "a", "input": ["x"], "output": "b"}), [],
     ["FILE:2: expected a string, got a list (input)"]),
    ("not-an-object", "d.jsonl", jl(GOOD, "[1, 2]"), [],
     ["FILE:2: expected a JSON object, got a list"]),
    ("several-in-one-record", "d.jsonl", jl(GOOD, {"instruction": "", "output": False}), [],
     ["FILE:2: empty string (instruction)", "FILE:2: expected a string, got a boolean (output)"]),
    ("unknown-role", "c.jsonl", jl(chat(*CHAT_OK), chat({"role": "bot", "content": "x"}, CHAT_OK[1])), [],
     ["FILE:2: unknown role 'bot', allowed: system, user, assistant (messages[0].role)"]),
    ("no-assistant", "c.jsonl", jl(chat(*CHAT_OK), chat(CHAT_OK[0])), [],
     ["FILE:2: no assistant turn, nothing to train on (messages)"]),
    ("empty-conversation", "c.jsonl", jl(chat(*CHAT_OK), chat()), [],
     ["FILE:2: empty conversation (messages)"]),
    ("messages-not-list", "c.jsonl", jl(chat(*CHAT_OK), {"messages": "hello"}), [],
     ["FILE:2: expected a list of messages, got a string (messages)"]),
    ("message-not-object", "c.jsonl", jl(chat(*CHAT_OK), chat(CHAT_OK[0], "ok")), [],
     ["FILE:2: expected an object with role and content, got a string (messages[1])"]),
    ("empty-content", "c.jsonl", jl(chat(*CHAT_OK), chat(CHAT_OK[0], {"role": "assistant", "content": ""})), [],
     ["FILE:2: empty string (messages[1].content)"]),
    ("missing-content", "c.jsonl", jl(chat(*CHAT_OK), chat(CHAT_OK[0], {"role": "assistant"})), [],
     ["FILE:2: missing field (messages[1].content)"]),
    ("system-not-first", "c.jsonl",
     jl(chat(*CHAT_OK), chat(*CHAT_OK, {"role": "system", "content": "Be brief."})), [],
     ["FILE:2: a system message must come first (messages[2].role)"]),
    ("sharegpt-unknown-from", "c.jsonl",
     jl(chat({"from": "human", "value": "Hi"}, {"from": "bing", "value": "Yo"}, key="conversations")), [],
     ["FILE:1: unknown role 'bing', allowed: human, gpt, system, user, assistant (conversations[1].from)"]),
    ("mixed-formats", "d.jsonl", jl(GOOD, GOOD, chat(*CHAT_OK)), [],
     ["FILE:3: mixed formats: this record is chat, most records are alpaca (use one format per dataset)"]),
    ("unknown-format", "d.jsonl", jl(GOOD, {"question": "q", "answer": "a"}), [],
     ["FILE:2: unknown record format, keys: question, answer (expected instruction/output, messages, "
      "conversations, prompt/completion or text)"]),
    ("forced-format", "d.jsonl", jl(GOOD), ["--format", "chat"], ["FILE:1: missing field (messages)"]),
    ("empty-file", "d.jsonl", b"\n  \n", [], ["FILE: empty file (no records)"]),
    ("prompt-completion-empty", "p.jsonl", jl({"prompt": "2+2=", "completion": "4"}, {"prompt": "3+3=",
                                                                                      "completion": " "}), [],
     ["FILE:2: empty string (completion)"]),
    ("text-wrong-type", "t.jsonl", jl({"text": "A sentence."}, {"text": {"body": "x"}}), [],
     ["FILE:2: expected a string, got an object (text)"]),
    ("json-item-not-object", "d.json", f"[{GOOD}, 7]".encode(), [],
     ["FILE:item 1: expected a JSON object, got a number"]),
    ("json-malformed", "d.json", f"[\n{GOOD},\n{GOOD}\n{GOOD}\n]".encode(), [],
     ["FILE:4: malformed JSON: Expecting ',' delimiter (column 1)"]),
    ("json-not-array", "d.json", b'"just a string"', [],
     ["FILE:1: expected a JSON array of records, got a string"]),
    ("json-item-field", "d.json", json.dumps([json.loads(GOOD), {"instruction": "x", "output": ""}]).encode(),
     [], ["FILE:item 1: empty string (output)"]),
    ("csv-missing-column", "d.csv", b"instruction,input\nName a colour.,\n", [],
     ["FILE:1: missing column(s) output (alpaca data needs instruction, output; found: instruction, input)"]),
    ("csv-row-length", "d.csv", b'instruction,input,output\na,,b\n"multi\nline",x\nc,,d\n', [],
     ["FILE:3: row has 2 fields, the header has 3"]),
    ("csv-empty-cell", "d.csv", b"instruction,input,output\na,,b\nc,x,\n", [],
     ["FILE:3: empty string (output)"]),
    ("csv-not-utf8", "d.csv", b"instruction,input,output\na,,b\nc,\xff,d\n", [],
     ["FILE:3: not UTF-8: byte 0xff at column 3 (re-save the file as UTF-8)"]),
    ("json-empty-array", "d.json", b"[]", [], ["FILE: empty file (no records)"]),
    ("template-multi-turn-alpaca", "c.jsonl", jl(chat(*CHAT_OK, *CHAT_OK)), ["--template", "alpaca"],
     ["FILE:1: the alpaca template needs one user turn and one assistant answer, this conversation has "
      "4 turns; use template chatml or model"]),
]


@pytest.mark.parametrize("name,filename,content,args,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_listed_with_its_line(tmp_path, capsys, name, filename, content, args, expected):
    path = tmp_path / filename
    path.write_bytes(content)
    rc = main(["data", "check", str(path), *args])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2
    assert err[0].startswith("error: ")
    assert [line.strip() for line in err[1:]] == [e.replace("FILE", str(path)) for e in expected]


def _parquet(path: Path, table: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(table), path)


def test_parquet_schema_problems(tmp_path, capsys):
    wrong_type = tmp_path / "a.parquet"
    _parquet(wrong_type, {"instruction": ["q1", "q2"], "output": [1, 2]})
    missing = tmp_path / "b.parquet"
    _parquet(missing, {"instruction": ["q1"], "answer": ["a"]})
    rc = main(["data", "check", str(wrong_type), str(missing)])
    err = [line.strip() for line in capsys.readouterr().err.splitlines()[1:]]
    assert rc == 2
    assert err == [f"{wrong_type}: column 'output' has type int64, expected string",
                   f"{missing}: missing column(s) output (alpaca data needs instruction, output; "
                   f"found: instruction, answer)"]


def test_parquet_row_problem_and_not_parquet(tmp_path, capsys):
    rows = tmp_path / "rows.parquet"
    _parquet(rows, {"messages": [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}],
                                 [{"role": "user", "content": "Hi"}]]})
    fake = tmp_path / "fake.parquet"
    fake.write_text("not parquet")
    rc = main(["data", "check", str(rows), str(fake)])
    err = [line.strip() for line in capsys.readouterr().err.splitlines()[1:]]
    assert rc == 2
    assert err[0] == f"{rows}:row 1: no assistant turn, nothing to train on (messages)"
    assert err[1].startswith(f"{fake}: not a readable Parquet file (")


def test_a_whole_file_in_another_format_is_one_problem(tmp_path, capsys):
    alpaca = tmp_path / "a.jsonl"
    alpaca.write_bytes(jl(GOOD, GOOD, GOOD))
    chats = tmp_path / "b.jsonl"
    chats.write_bytes(jl(chat(*CHAT_OK), chat(*CHAT_OK)))
    rc = main(["data", "check", str(alpaca), str(chats)])
    err = [line.strip() for line in capsys.readouterr().err.splitlines()[1:]]
    assert rc == 2
    assert err == [f"{chats}: mixed formats: all 2 records of this file are chat, most records are alpaca "
                   f"(use one format per dataset)"]


def test_missing_and_unsupported_paths(tmp_path, capsys):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    rc = main(["data", "check", str(tmp_path / "nope.jsonl"), str(txt), str(empty_dir)])
    err = [line.strip() for line in capsys.readouterr().err.splitlines()[1:]]
    assert rc == 2
    assert err == [f"{tmp_path / 'nope.jsonl'}: file not found",
                   f"{txt}: unsupported file type '.txt' (use .jsonl, .json, .csv, .tsv, .parquet)",
                   f"{empty_dir}: no data files (.jsonl, .json, .csv, .tsv, .parquet) in this directory"]


def test_all_problems_of_the_bundled_malformed_sample(capsys):
    path = "examples/data/malformed.jsonl"
    rc = main(["data", "check", str(ROOT / path)])
    err = capsys.readouterr().err.splitlines()
    assert rc == 2
    assert err[0] == "error: 6 problems in 8 records; fix each line below"
    assert [line.split(": ", 1)[0].rsplit(":", 1)[1] for line in err[1:]] == ["2", "3", "4", "5", "6", "8"]


def test_valid_files_exit_0_with_statistics(capsys):
    rc = main(["data", "check", str(ROOT / "examples/data/alpaca.jsonl")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "format      alpaca (detected)" in out
    assert "records     16 read, 16 valid" in out
    assert "duplicates  2, dropped in training" in out  # one exact copy, one equal up to whitespace
    assert "[[Le chat dort sur le canapé.<eos>]]" in out
    assert out.rstrip().endswith("ok: 14 examples, no problems")


def test_bom_and_crlf_are_accepted(tmp_path, capsys):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbfinstruction,input,output\r\nName a colour.,,Blue.\r\n")
    assert main(["data", "check", str(path)]) == 0
    assert "records     1 read, 1 valid" in capsys.readouterr().out


def test_without_model_no_torch_or_transformers_is_imported(tmp_path):
    """`lmtune data check` without --model stays light: a fresh interpreter must not load them."""
    code = ("import sys; from lmtune.cli import main; rc = main(['data', 'check', sys.argv[1]]); "
            "heavy = sorted(m for m in ('torch', 'transformers', 'datasets', 'trl', 'peft') if m in sys.modules); "
            "print('HEAVY', heavy); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "examples/data/chat.jsonl")],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY []" in proc.stdout


def test_check_files_finds_a_bad_line_in_any_split_without_tokenizing(tmp_path):
    """What a `--nproc N` launcher runs before starting ranks (lmtune/commands/train.py)."""
    from lmtune.config import load_config
    from lmtune.data.arrow_pipeline import check_files
    from lmtune.errors import DataError

    good = tmp_path / "good.jsonl"
    good.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "c", "output": "d"}\n')
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": 3\n')
    check_files(load_config(None, [f"data.train={good}"]).data)   # all well: returns quietly
    for key in ("data.train", "data.validation", "data.test"):
        extra = [] if key == "data.train" else [f"data.train={good}"]
        with pytest.raises(DataError) as err:
            check_files(load_config(None, [*extra, f"{key}={bad}"]).data)
        assert any("bad.jsonl:2: malformed JSON" in p for p in err.value.problems), key
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError) as err:
        check_files(load_config(None, [f"data.train={empty}"]).data)
    assert err.value.problems == [f"{empty}: empty file (no records)"]
