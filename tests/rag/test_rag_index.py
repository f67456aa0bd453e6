"""The BM25 index: the right passage on a small real corpus, the cache by content and settings."""

import json
import os

import pytest

from lmtune.config import RagConfig
from lmtune.rag.index import cache_root
from lmtune.rag.prompt import augment, augment_item
from lmtune.rag.retrieve import Retriever

CATALOGUE = [
    {"id": "kettle", "text": "The Aurora kettle holds 1.7 litres, costs 49 euros and ships within 3 days."},
    {"id": "toaster", "text": "The Brisa toaster has four slots, costs 35 euros and ships within 5 days."},
    {"id": "blender", "text": "The Cumulus blender has a 900 watt motor, costs 89 euros and ships in 2 days."},
    {"id": "lamp", "text": "The Delta desk lamp uses a 7 watt LED bulb and costs 22 euros."},
    {"id": "returns", "text": "Any item can be returned within 30 days for a full refund of its price."},
]


@pytest.fixture
def docs(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "catalogue.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in CATALOGUE))
    return path


@pytest.mark.parametrize("question, best", [
    ("How much does the Brisa toaster cost?", "toaster"),
    ("What is the wattage of the Cumulus blender motor?", "blender"),
    ("Can I get a refund if I return something?", "returns"),
    ("How many litres does the Aurora hold?", "kettle"),
])
def test_search_finds_the_passage_that_answers(docs, question, best):
    found = Retriever.build(RagConfig(docs=str(docs))).search(question, 3)
    assert found[0].id == best and found[0].source == f"{docs}:{[r['id'] for r in CATALOGUE].index(best) + 1}"
    assert [p.score for p in found] == sorted((p.score for p in found), reverse=True)


def test_no_shared_word_finds_nothing_and_k_is_capped(docs):
    r = Retriever.build(RagConfig(docs=str(docs)))
    assert r.search("zebra quantum", 3) == [] and r.search("", 3) == []
    assert len(r.search("costs euros", 50)) == 4   # four documents say both; no more than the chunks


def test_index_is_cached_by_content_and_settings(docs):
    settings = RagConfig(docs=str(docs))
    assert Retriever.build(settings).cached is False
    assert Retriever.build(settings).cached is True
    entries = [p for p in cache_root().iterdir() if not p.name.startswith(".")]
    assert len(entries) == 1 and (entries[0] / "meta.json").is_file()
    assert Retriever.build(RagConfig(docs=str(docs), chunk_tokens=8, chunk_overlap=2)).cached is False
    # a changed fact rebuilds, and the new fact is what is found
    text = docs.read_text().replace("costs 35 euros", "costs 39 euros")
    docs.write_text(text)
    r = Retriever.build(settings)
    assert r.cached is False and "39 euros" in r.search("Brisa toaster price", 1)[0].text
    assert not any(p.name.startswith(".build-") for p in cache_root().iterdir())


def test_a_damaged_entry_is_rebuilt(docs, capsys):
    settings = RagConfig(docs=str(docs))
    Retriever.build(settings)
    [entry] = [p for p in cache_root().iterdir() if not p.name.startswith(".")]
    (entry / "chunks.jsonl").write_text('["kettle", "x", 0, "only one"]\n')
    r = Retriever.build(settings)
    assert r.cached is False and len(r.chunks) == len(CATALOGUE)
    assert "cannot be used" in capsys.readouterr().err
    assert Retriever.build(settings).cached is True


def test_augment_numbers_passages_before_the_question(docs):
    r = Retriever.build(RagConfig(docs=str(docs)))
    passages = r.search("Brisa toaster", 2)
    text = augment("How much is the Brisa toaster?", passages)
    assert text.startswith("Passages:\n[1] (toaster) The Brisa toaster")
    assert text.endswith("\n\nQuestion: How much is the Brisa toaster?")
    assert augment("q?", []) == "q?"
    # the last user turn is what is searched and replaced; earlier turns stay as they were
    chat = [{"role": "user", "content": "Brisa toaster?"}, {"role": "assistant", "content": "yes"},
            {"role": "user", "content": "And the Delta lamp?"}]
    item, found = augment_item(chat, lambda q: r.search(q, 1))
    assert found[0].id == "lamp" and item.messages[0]["content"] == "Brisa toaster?"
    assert item.messages[2]["content"].startswith("Passages:\n[1] (lamp)")
    alpaca = {"instruction": "What does the Cumulus blender cost?", "input": ""}
    item, found = augment_item(alpaca, lambda q: r.search(q, 1))
    assert found[0].id == "blender" and item.fields["instruction"].endswith("Question: What does the Cumulus blender cost?")
