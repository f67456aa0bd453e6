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
        self._largest: dict[int, float] = {}   # word id -> its largest per-chunk score (Retriever._pruned)

    @classmethod
    def build(cls, settings: Any, tokenizer=None, cache: bool = True) -> "Retriever":
        """The index of `settings.docs` (a config.RagConfig), chunked by `tokenizer`'s tokens (None:
        whitespace words), from the cache when the docs and settings are unchanged."""
        bm25, chunks, cached = load_index(settings, tokenizer, cache)
        return cls(bm25, chunks, settings, cached)

    def search(self, query: str, k: int, prune: bool = True) -> list[Passage]:
        """The best `k` passages for `query`, best first (ties: the earlier passage); passages sharing
        no word with it are left out. prune=False scores every passage (the reference the pruned
        search is tested against)."""
        k = min(k, len(self.chunks))
        # words the index never saw score nothing (and bm25s refuses them)
        vocab = self.bm25.vocab_dict
        ids = [vocab[w] for w in words(query) if w in vocab]
        if k <= 0 or not ids:
            return []
        rows, scores = (self._pruned(ids, k) if prune else None) or self._every(ids)
        top = _top(rows, scores, k)
        return [Passage(c.doc_id, c.source, c.text, float(scores[i]), c.index)
                for i in top for c in (self.chunks[int(rows[i])],)]

    def scores(self, ids: list[int]):
        """The BM25 score of every chunk for these word ids: bm25s' precomputed per-word scores
        (its sparse matrix, one column per word) summed with one bincount. bm25s' own
        `get_scores_from_ids` sums them with np.add.at and its `retrieve` starts a thread pool
        per call; each costs more than the scoring itself (benchmarks/README.md)."""
        import numpy as np

        m = self.bm25.scores
        if self.bm25.nonoccurrence_array is not None:   # BM25L/BM25+ variants add a term per word
            return self.bm25.get_scores_from_ids(ids)
        rows, weights = self._postings(ids)
        return np.bincount(rows, weights=weights, minlength=m["num_docs"])

    def _every(self, ids: list[int]):
        import numpy as np

        scores = self.scores(ids)
        rows = np.flatnonzero(scores > 0)
        return rows, scores[rows]

    def _postings(self, ids: list[int]):
        """(chunk rows, per-word scores) of every posting of these words, concatenated."""
        import numpy as np

        m = self.bm25.scores
        spans = [(m["indptr"][t], m["indptr"][t + 1]) for t in ids]
        return (np.concatenate([m["indices"][a:b] for a, b in spans]),
                np.concatenate([m["data"][a:b] for a, b in spans]))

    def _pruned(self, ids: list[int], k: int):
        """The same top k without summing the postings of words most chunks hold ("ships" in a
        catalogue): their scores are small (a low IDF) but their lists are as long as the index.
        Candidates are the chunks holding a rarer word; the common words' scores are added to the
        candidates only; when the k-th candidate's score beats the most any other chunk could reach
        (the sum of the common words' largest scores), no other chunk can be in the top k. None:
        not decided this way (the caller scores every chunk)."""
        import numpy as np

        m = self.bm25.scores
        if self.bm25.nonoccurrence_array is not None:
            return None
        indptr, limit = m["indptr"], COMMON_SHARE * m["num_docs"]
        common = [t for t in ids if indptr[t + 1] - indptr[t] > limit]
        rare = [t for t in ids if indptr[t + 1] - indptr[t] <= limit]
        if not common or not rare:
            return None
        rows, weights = self._postings(rare)
        cand, where = np.unique(rows, return_inverse=True)
        if len(cand) < k:
            return None
        scores = np.bincount(where, weights=weights)
        bound = 0.0
        for t in common:
            col, data = m["indices"][indptr[t]:indptr[t + 1]], m["data"][indptr[t]:indptr[t + 1]]
            pos = np.minimum(np.searchsorted(col, cand), len(col) - 1)   # the columns are sorted by row
            hit = col[pos] == cand
            scores[hit] += data[pos[hit]]
            if t not in self._largest:   # a scan of the whole list: once per word
                self._largest[t] = float(data.max())
            bound += self._largest[t]
        kth = np.partition(scores, len(scores) - k)[len(scores) - k]
        return (cand, scores) if kth > bound else None


COMMON_SHARE = 0.1   # a word in more than this share of the chunks counts as common (Retriever._pruned)


def _top(rows, scores, k: int):
    """Positions of the k best scores, best first; ties: the lower row."""
    import numpy as np

    pick = np.arange(len(rows))
    if len(pick) > k:
        pick = np.argpartition(scores, len(scores) - k)[-k:]
        # ties at the k-th score: take every tied row, the lexsort below keeps the lowest
        kth = scores[pick].min()
        pick = np.union1d(pick, np.flatnonzero(scores == kth))
    return pick[np.lexsort((rows[pick], -scores[pick]))][:k]
