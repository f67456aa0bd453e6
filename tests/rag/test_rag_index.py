"""The BM25 index: the right passage on a small real corpus, the cache by content and settings."""

import json

import pytest

from lmtune.config import RagConfig
from lmtune.rag.index import cache_root, words
from lmtune.rag.prompt import augment, augment_item
from lmtune.rag.retrieve import Retriever
from rag_runs import CATALOGUE



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
    fresh, cached = Retriever.build(settings), Retriever.build(settings)
    assert fresh.cached is False and cached.cached is True
    for question in ("Brisa toaster price in euros", "refund returned item", "watt motor blender"):
        assert cached.search(question, 3) == fresh.search(question, 3)   # the reloaded index finds the same
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
    assert found[0].id == "lamp" and item[0]["content"] == "Brisa toaster?"
    assert chat[2]["content"] == "And the Delta lamp?"   # the caller's list is left as it was
    assert item[2]["content"].startswith("Passages:\n[1] (lamp)")
    alpaca = {"instruction": "What does the Cumulus blender cost?", "input": ""}
    item, found = augment_item(alpaca, lambda q: r.search(q, 1))
    assert found[0].id == "blender" and item.fields["instruction"] == augment(alpaca["instruction"], found)
    # chat templates render the messages: the same text
    assert item.prompt_messages() == [{"role": "user", "content": augment(alpaca["instruction"], found)}]
    record = {"prompt": "Delta lamp watt", "completion": "7"}
    item, found = augment_item(record, lambda q: r.search(q, 1))
    assert item.fields["prompt"] == item.prompt_messages()[-1]["content"] == augment("Delta lamp watt", found)


def test_words_split_as_bm25s_does():
    import bm25s

    texts = ["The Brisa toaster's 4 slots: €35, ships in 5 days!", "Ünïcode wörds and a_b snake_case, I/O x"]
    assert [words(t) for t in texts] == bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)


def test_scores_equal_bm25s_own(docs):
    import numpy as np

    r = Retriever.build(RagConfig(docs=str(docs)))
    vocab = r.bm25.vocab_dict
    for question in ("costs euros ships days", "Brisa toaster costs costs", "refund"):
        ids = [vocab[w] for w in words(question) if w in vocab]
        assert np.allclose(r.scores(ids), r.bm25.get_scores_from_ids(ids), rtol=1e-5)


def test_an_unwritable_cache_keeps_the_index_in_memory(docs, monkeypatch, tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(blocker))
    r = Retriever.build(RagConfig(docs=str(docs)))
    assert r.search("Brisa toaster", 1)[0].id == "toaster" and r.cached is False
    assert "cannot write the index cache" in capsys.readouterr().err and blocker.read_text().startswith("a file")


def test_pruned_search_equals_scoring_every_chunk(tmp_path, monkeypatch):
    import random

    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(tmp_path / "cache"))
    rng = random.Random(0)
    kinds = ["kettle", "toaster", "lamp", "chair", "tent", "drill", "fan", "pan"]
    names = [f"Model{i}" for i in range(400)]
    path = tmp_path / "shop.jsonl"
    lines = [json.dumps({"id": i, "text": f"The {rng.choice(names)} {rng.choice(kinds)} ships within "
                                          f"{rng.randint(1, 9)} days and costs {rng.randint(5, 60)} euros."})
             for i in range(3000)]
    path.write_text("\n".join(lines) + "\n")
    r = Retriever.build(RagConfig(docs=str(path)))
    vocab, pruned = r.bm25.vocab_dict, 0
    for _ in range(150):
        q = (f"When does the {rng.choice(names)} {rng.choice(kinds)} ship, what does it cost in euros, "
             f"{rng.randint(1, 9)} days?")
        k = rng.choice([1, 3, 5])
        fast, every = r.search(q, k), r.search(q, k, prune=False)
        assert [(p.id, p.chunk) for p in fast] == [(p.id, p.chunk) for p in every]
        assert [p.score for p in fast] == pytest.approx([p.score for p in every], rel=1e-9)
        pruned += r._pruned([vocab[w] for w in words(q) if w in vocab], k) is not None
    assert pruned > 100   # the common words ("ships", "days", "euros") were left to the candidates


def test_pruning_gives_way_when_common_words_outscore_the_candidates(tmp_path, monkeypatch):
    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(tmp_path / "cache"))
    texts = ["rarish filler"] * 9 + ["alpha beta gamma filler"] * 11 + ["filler words only"] * 80
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    r = Retriever.build(RagConfig(docs=str(path)))
    # "rarish" (9 of 100 chunks) makes the candidates; alpha+beta+gamma (11 each) outscore it together
    assert r.search("rarish alpha beta gamma", 1)[0].id == "9"
    assert r.search("rarish alpha beta gamma", 1) == r.search("rarish alpha beta gamma", 1, prune=False)


def test_documents_checked_once_per_content(docs, monkeypatch):
    from lmtune.errors import DataError
    from lmtune.rag import index

    parsed = []
    real = index.load_documents
    monkeypatch.setattr(index, "load_documents", lambda path: parsed.append(path) or real(path))
    index.check_documents(str(docs))
    index.check_documents(str(docs))
    assert len(parsed) == 1 and len(list((cache_root() / "checked").iterdir())) == 1
    docs.write_text(docs.read_text() + '{"id": "new"}\n')   # changed: checked again, and refused
    with pytest.raises(DataError, match=r"1 bad document"):
        index.check_documents(str(docs))
    assert len(parsed) == 2
