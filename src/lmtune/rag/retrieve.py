"""Passages for a question: `Retriever.build(settings, tokenizer).search(question, k)`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lmtune.rag.docs import Chunk
from lmtune.rag.index import bm25_tokens, load_index


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
        # words the index never saw score nothing (and bm25s refuses them)
        words = [w for w in bm25_tokens([query], ids=False)[0] if w in self.bm25.vocab_dict]
        if k <= 0 or not words:
            return []
        docs, scores = self.bm25.retrieve([words], k=k, show_progress=False, n_threads=1)
        out = []
        for i, score in zip(docs[0], scores[0]):
            if score > 0:
                c = self.chunks[int(i)]
                out.append(Passage(c.doc_id, c.source, c.text, float(score), c.index))
        return out
