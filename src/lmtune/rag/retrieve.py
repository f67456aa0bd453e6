"""Passages for a question: `Retriever.build(settings, tokenizer).search(question, k)`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmtune.rag.docs import Chunk
from lmtune.rag.index import load_index, words


@dataclass(frozen=True)
class Passage:
    id: str             # the document's id (JSONL id, or the file's path in the docs folder)
    source: str         # where it came from: file:line or the file
    text: str           # the chunk's text
    score: float        # BM25 score (higher: more words of the question, rarer words weigh more)
    chunk: int = 0      # the chunk's position in its document

    def to_dict(self) -> dict:
        return {"id": self.id, "source": self.source, "chunk": self.chunk, "score": round(self.score, 4),
                "text": self.text}


class Retriever:
    """BM25 over the chunks of rag.docs. `cached`: whether the index came from lmtune's cache."""

    def __init__(self, bm25: Any, chunks: list[Chunk], settings: Any, cached: bool = False):
        self.bm25, self.chunks, self.settings, self.cached = bm25, chunks, settings, cached

    @classmethod
    def build(cls, settings: Any, tokenizer=None, cache: bool = True) -> "Retriever":
        """The index of `settings.docs` (a config.RagConfig), chunked by `tokenizer`'s tokens (None:
        whitespace words), from the cache when the docs and settings are unchanged."""
        bm25, chunks, cached = load_index(settings, tokenizer, cache)
        return cls(bm25, chunks, settings, cached)

    def search(self, query: str, k: int) -> list[Passage]:
        """The best `k` passages for `query`, best first; passages sharing no word with it are left out."""
        k = min(k, len(self.chunks))
        import numpy as np

        # words the index never saw score nothing (and bm25s refuses them)
        vocab = self.bm25.vocab_dict
        ids = [vocab[w] for w in words(query) if w in vocab]
        if k <= 0 or not ids:
            return []
        scores = self.scores(ids)
        hits = np.flatnonzero(scores > 0)
        if len(hits) > k:
            hits = hits[np.argpartition(scores[hits], len(hits) - k)[-k:]]
        best = hits[np.lexsort((hits, -scores[hits]))]   # best first; ties: the earlier chunk
        return [Passage(c.doc_id, c.source, c.text, float(scores[i]), c.index)
                for i in best for c in (self.chunks[int(i)],)]

    def scores(self, ids: list[int]):
        """The BM25 score of every chunk for these word ids: bm25s' precomputed per-word scores
        (its sparse matrix, one column per word) summed with one bincount. bm25s' own
        `get_scores_from_ids` sums them with np.add.at and its `retrieve` starts a thread pool
        per call; each costs more than the scoring itself (benchmarks/README.md)."""
        import numpy as np

        m = self.bm25.scores
        if self.bm25.nonoccurrence_array is not None:   # BM25L/BM25+ variants add a term per word
            return self.bm25.get_scores_from_ids(ids)
        spans = [(m["indptr"][t], m["indptr"][t + 1]) for t in ids]
        rows = np.concatenate([m["indices"][a:b] for a, b in spans])
        return np.bincount(rows, weights=np.concatenate([m["data"][a:b] for a, b in spans]),
                           minlength=m["num_docs"])
