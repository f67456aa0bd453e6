"""rag.docs: loading (JSONL records, a folder of .txt/.md), file:line errors, chunking with overlap."""

import json

import pytest
import yaml

from lmtune.cli import main
from lmtune.errors import DataError, UserError
from lmtune.rag.docs import chunk_documents, load_documents, windows


def _jsonl(path, lines):
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
    return path


def test_jsonl_records_keep_id_text_and_line(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "alpha", "title": "ignored"}, "", {"id": 7, "text": "b"}])
    docs = load_documents(path)
    assert [(d.id, d.text) for d in docs] == [("a", "alpha"), ("7", "b")]
    assert docs[1].source == f"{path}:3"   # the blank line still counts


def test_every_bad_record_is_named_by_file_and_line(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "ok"}, "{not json", '["a list"]', {"text": "no id"},
                                         {"id": "b", "text": ""}, {"id": "a", "text": "again"},
                                         {"id": True, "text": "x"}])
    with pytest.raises(DataError) as info:
        load_documents(path)
    problems = info.value.problems
    assert [p.split(": ")[0] for p in problems] == [f"{path}:{n}" for n in (2, 3, 4, 5, 6, 7)]
    assert "malformed JSON" in problems[0] and "expected a JSON object" in problems[1]
    assert "id: expected a non-empty string or integer" in problems[2]
    assert "text: expected a non-empty string" in problems[3]
    assert "id 'a' already used on line 1" in problems[4]


def test_folder_of_text_files_ids_are_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.md").write_text("# A\nfirst")
    (tmp_path / "sub" / "b.txt").write_text("second")
    (tmp_path / "c.json").write_text("{}")   # not a document
    docs = load_documents(tmp_path)
    assert [d.id for d in docs] == ["a.md", "sub/b.txt"]
    (tmp_path / "sub" / "bad.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(DataError, match="1 bad document") as info:
        load_documents(tmp_path)
    assert info.value.problems[0].startswith(f"{tmp_path / 'sub' / 'bad.txt'}: not UTF-8")


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing.jsonl", "does not exist"),
    (lambda p: p, "holds no .txt or .md files"),
    (lambda p: (p / "x.csv").write_text("a") and p / "x.csv", "neither .jsonl, .txt nor .md"),
    (lambda p: _jsonl(p / "e.jsonl", [""]), "holds no text"),
])
def test_unusable_docs_paths(tmp_path, make, message):
    with pytest.raises(UserError, match=message):
        load_documents(make(tmp_path))


def test_no_docs_set_is_a_clear_error():
    from lmtune.config import RagConfig
    from lmtune.rag.retrieve import Retriever

    with pytest.raises(UserError, match="rag.docs is not set"):
        Retriever.build(RagConfig())


def test_windows_overlap_and_cover_every_token():
    spans = [(i * 2, i * 2 + 1) for i in range(10)]          # ten one-letter words
    assert windows(spans, 4, 1) == [(0, 7), (6, 13), (12, 19)]   # tokens 0-3, 3-6, 6-9
    assert windows(spans, 10, 2) == [(0, 19)]                 # one window: no empty tail
    assert windows(spans, 5, 0) == [(0, 9), (10, 19)]
    assert windows([], 4, 1) == []


def test_chunks_by_whitespace_and_by_tokenizer(tmp_path):
    from tiny_models import build_tokenizer

    path = _jsonl(tmp_path / "d.jsonl", [{"id": "a", "text": "one two three four five six seven"}])
    docs = load_documents(path)
    chunks = chunk_documents(docs, 3, 1, None)
    assert [c.text for c in chunks] == ["one two three", "three four five", "five six seven"]
    assert [c.index for c in chunks] == [0, 1, 2]
    tok = build_tokenizer()
    by_tokens = chunk_documents(docs, 3, 1, tok)
    n = len(tok(docs[0].text, add_special_tokens=False)["input_ids"])
    assert len(by_tokens) == -(-(n - 1) // 2)   # windows of 3 tokens stepping by 2
    for c in by_tokens:   # cut from the text at token boundaries, each 3 tokens long (the last may be shorter)
        assert c.text in docs[0].text and len(tok(c.text.strip(), add_special_tokens=False)["input_ids"]) <= 4


def test_rag_config_keys_and_messages(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"id": 1, "text": "x"}\n')
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("data:\n  task: sql\nrag:\n  docs: d.jsonl\n  chunk_overlap: 128\n  top_k: 0\n"
                        "  retriever: dense\n  chunks: 3\n")
    assert main(["config", "show", str(cfg_file)]) == 2
    from lmtune.config import from_dict, load_config
    from lmtune.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_config(cfg_file)
    problems = info.value.problems
    assert "rag.top_k: got 0, must be >= 1" in problems
    assert any(p.startswith("rag.retriever: got 'dense', allowed: bm25") for p in problems)
    assert any(p.startswith("rag.chunks: unknown key") for p in problems)
    cfg_file.write_text("data:\n  task: sql\nrag:\n  docs: d.jsonl\n  chunk_overlap: 128\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg_file)
    assert info.value.problems == ["rag.chunk_overlap: got 128, must be below rag.chunk_tokens (128)"]
    cfg_file.write_text("data:\n  task: sql\nrag:\n  docs: d.jsonl\n")
    cfg = load_config(cfg_file)   # relative to the config file, made absolute like data paths
    assert cfg.rag.docs == str(tmp_path / "d.jsonl") and cfg.rag.top_k == 3 and cfg.rag.retriever == "bm25"
    assert load_config(None, ["data.task=sql"]).rag.docs is None
    # the run's config.yaml keeps the section: what generate, serve and eval read back
    assert from_dict(yaml.safe_load(cfg.to_yaml())).rag == cfg.rag
