"""lmtune/data/formats.py: what `lmtune data check` reports and in which order, on real files. Every
problem of every file is reported (a bad record or file never hides the ones after it), tabular
schemas are checked once per file, problems come in reading order, and the content/prompt keys
that deduplication and the held-out overlap count use tell examples apart. Literal expected
values."""

from __future__ import annotations

import json

from data_reference import load_examples
from lmtune.data.formats import Example, guess_format, sort_problems
from lmtune.data.readers import FileInfo
from lmtune.data.templates import ChatMLTemplate

EXPECTED = "(expected instruction/output, messages, conversations, prompt/completion or text)"


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _parquet(path, table):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(table), path)
    return str(path)


def test_a_bad_record_never_hides_the_records_after_it(tmp_path):
    nine = {f"k{i}": i for i in range(9)}
    path = _jsonl(tmp_path / "d.jsonl", [
        {"instruction": "I1", "output": "O1"}, {}, nine, {"text": "t"},
        {"instruction": "I5", "output": ""}, {"instruction": "I6", "output": "O6"}])
    loaded = load_examples([path])
    assert loaded.format == "alpaca" and loaded.records == 6
    assert [e.source for e in loaded.examples] == [f"{path}:1", f"{path}:6"]
    assert loaded.problems == [
        f"{path}:2: unknown record format, keys: none {EXPECTED}",
        f"{path}:3: unknown record format, keys: k0, k1, k2, k3, k4, k5, k6, k7 {EXPECTED}",  # 8 at most
        f"{path}:4: mixed formats: this record is text, most records are alpaca (use one format per dataset)",
        f"{path}:5: empty string (output)"]


def test_a_whole_file_in_another_format_is_one_problem_with_its_record_count(tmp_path):
    main = _jsonl(tmp_path / "a.jsonl", [{"instruction": f"I{i}", "output": "O"} for i in range(3)])
    other = _jsonl(tmp_path / "b.jsonl", [{"text": "t1"}, {"text": "t2"}])
    loaded = load_examples([main, other])
    assert loaded.problems == [f"{other}: mixed formats: all 2 records of this file are text, most records are "
                               f"alpaca (use one format per dataset)"]
    assert [e.source for e in loaded.examples] == [f"{main}:1", f"{main}:2", f"{main}:3"]


def test_every_tabular_file_is_checked_and_a_bad_one_hides_no_other_file(tmp_path):
    first = _jsonl(tmp_path / "a.jsonl", [{"instruction": "I", "output": "O"}])
    (tmp_path / "b.csv").write_text("instruction\nq\n")
    (tmp_path / "c.csv").write_text(" \nx\n")  # a blank header: one unnamed column
    (tmp_path / "d.csv").write_text("instruction,output\nq,a\n")
    paths = [first] + [str(tmp_path / n) for n in ("b.csv", "c.csv", "d.csv")]
    loaded = load_examples(paths, "alpaca")
    assert loaded.problems == [
        f"{paths[1]}:1: missing column(s) output (alpaca data needs instruction, output; found: instruction)",
        f"{paths[2]}:1: missing column(s) instruction, output (alpaca data needs instruction, output; "
        f"found: none)"]
    assert [e.source for e in loaded.examples] == [f"{first}:1", f"{paths[3]}:2"]
    assert [(f.path, f.kind, f.records) for f in loaded.files] == [
        (paths[0], "jsonl", 1), (paths[1], "csv", 1), (paths[2], "csv", 1), (paths[3], "csv", 1)]


def test_a_chat_table_needs_one_of_its_two_columns(tmp_path):
    (tmp_path / "c.csv").write_text("prompt,id\nhi,1\n")
    path = str(tmp_path / "c.csv")
    assert load_examples([path], "chat").problems == [
        f"{path}:1: missing column(s) messages|conversations (chat data needs messages or conversations; "
        f"found: prompt, id)"]


def test_a_table_in_no_known_format_is_reported_per_row_not_checked_against_a_schema(tmp_path):
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    path = str(tmp_path / "x.csv")
    loaded = load_examples([path])
    assert loaded.format is None and loaded.examples == []
    assert loaded.problems == [f"{path}:2: unknown record format, keys: a, b {EXPECTED}"]


def test_optional_text_columns_of_a_parquet_file_must_be_strings_and_extra_columns_are_free(tmp_path):
    alpaca = _parquet(tmp_path / "a.parquet", {"instruction": ["q"], "output": ["a"], "input": [1], "system": [2]})
    loaded = load_examples([alpaca], "alpaca")
    assert loaded.examples == []
    assert loaded.problems == [f"{alpaca}: column 'input' has type int64, expected string",
                               f"{alpaca}: column 'system' has type int64, expected string"]
    turns = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    # a column named like the "messages|conversations" rule is just another extra column
    chat = _parquet(tmp_path / "c.parquet", {"messages": [turns], "messages|conversations": [3]})
    loaded = load_examples([chat], "chat")
    assert loaded.problems == [] and [e.messages for e in loaded.examples] == [turns]


def test_guess_format_from_any_one_key_of_a_format():
    assert guess_format({"output": "o"}) == "alpaca"
    assert guess_format({"instruction": "i"}) == "alpaca"
    assert guess_format({"completion": "c"}) == "prompt_completion"
    assert guess_format({"prompt": "p"}) == "prompt_completion"
    assert guess_format({"text": "t", "id": 1}) == "text"
    assert guess_format({"id": 1}) is None


def test_problems_come_in_reading_order_by_file_then_line_item_or_row():
    files = [FileInfo("d/a.jsonl", "jsonl"), FileInfo("d/a.jsonl:b.jsonl", "jsonl"),  # one name prefixes the other
             FileInfo("d/c.json", "json"), FileInfo("d/e.parquet", "parquet")]
    problems = ["d/e.parquet:row 10: x", "d/a.jsonl:b.jsonl:2: x", "d/c.json:item 10: x",
                "d/e.parquet: column 'input' has type int64, expected string", "d/a.jsonl:3: x",
                "d/c.json:item 2: x", "d/e.parquet:row 0: x", "d/gone.jsonl: no such file"]
    assert sort_problems(problems, files) == [
        "d/gone.jsonl: no such file",  # a problem of no file read comes first
        "d/a.jsonl:3: x", "d/a.jsonl:b.jsonl:2: x", "d/c.json:item 2: x", "d/c.json:item 10: x",
        "d/e.parquet: column 'input' has type int64, expected string",  # the file's own before its rows
        "d/e.parquet:row 0: x", "d/e.parquet:row 10: x"]


def _alpaca(**fields):
    return Example("s", "alpaca", fields={"instruction": "I", "input": "", "output": "O", **fields})


def test_content_and_prompt_keys_tell_examples_apart():
    # alpaca: the system field is content and prompt; a missing one is an empty one
    assert _alpaca(system="A").content_key() != _alpaca(system="B").content_key()
    assert _alpaca(system="A").prompt_key() != _alpaca(system="B").prompt_key()
    assert _alpaca().content_key() == _alpaca(system="").content_key()
    # the input is part of the prompt; the output is not
    assert _alpaca(input="X").prompt_key() != _alpaca(input="Y").prompt_key()
    assert _alpaca(output="P").prompt_key() == _alpaca().prompt_key()
    assert _alpaca(output="P").content_key() != _alpaca().content_key()
    # text: each text its own key
    a, b = Example("s", "text", text="one"), Example("s", "text", text="two")
    assert a.content_key() != b.content_key()
    for ex in (a, _alpaca(system="A", input="X")):
        assert ex.keys() == (ex.content_key(), ex.prompt_key())


def test_a_conversation_with_its_own_system_turn_keeps_it_alone():
    template = ChatMLTemplate(system_prompt="T")
    own = Example("s", "chat", messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "u"}])
    assert template.render_prompt(own) == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu<|im_end|>\n" \
                                          "<|im_start|>assistant\n"
    plain = Example("s", "chat", messages=[{"role": "user", "content": "u"}])
    assert template.render_prompt(plain).startswith("<|im_start|>system\nT<|im_end|>\n<|im_start|>user\n")
