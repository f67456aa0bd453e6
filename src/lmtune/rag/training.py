"""Retrieval-augmented fine-tuning: with rag.docs set at train, every training (and validation)
prompt carries passages, rendered by prompt.with_passages, i.e. exactly as generate, serve and
eval put them before a question. The data pipeline calls a TrainingPassages on each batch of
examples before the template renders them (data/token_shards.py), so the chat template and the
prompt-loss masking are the ordinary ones: only the answer is trained.

Which passages, the way RAFT trains (Zhang et al. 2024, "RAFT: Adapting Language Model to Domain
Specific RAG"): the question's top_k passages as the retriever ranks them at inference (the others
are the distractors a real search returns), with the gold passage, the one that best matches the
question together with its answer, always among them (it replaces the lowest-ranked passage when
the search missed it). With rag.train_gold below 1, that share of examples keeps the gold passage
and the rest get distractors only, so the model also learns to answer without a matching passage.
The order stays the retriever's (best first), as at inference.

Each example's draw is seeded by rag.seed and the example's source (file:line): the same data gives
the same prompts in any process, so the prepared data is cached like any other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from typing import Any

from lmtune.rag.index import index_key
from lmtune.rag.prompt import question_of, with_passages
from lmtune.rag.retrieve import Passage, Retriever

VERSION = 1   # bump when the same inputs would give other prompts


class TrainingPassages:
    """Callable on a list of data.formats.Example: the same examples with passages in the prompt."""

    def __init__(self, retriever: Retriever, settings: Any, tokenizer: Any = None):
        self.retriever, self.settings = retriever, settings
        self.top_k, self.gold_share, self.seed = settings.top_k, settings.train_gold, settings.seed
        what = {"version": VERSION, "index": index_key(settings, tokenizer), "top_k": self.top_k,
                "train_gold": self.gold_share, "seed": self.seed}
        self.key = hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]

    def describe(self) -> dict:
        """What data_stats.json records about the passages training saw."""
        return {"rag_docs": str(self.settings.docs), "top_k": self.top_k, "train_gold": self.gold_share,
                "seed": self.seed}

    def __call__(self, examples: list) -> list:
        return [self.one(example) for example in examples]

    def one(self, example: Any) -> Any:
        question = question_of(example)
        if not question or not question.strip():
            return example
        return with_passages(example, self.passages(question, example.response, example.source))

    def passages(self, question: str, answer: str, source: str) -> list[Passage]:
        rng = random.Random(f"{self.seed}:{source}")
        ranked = self.retriever.search(question, self.top_k + 1)
        gold = self.gold(question, answer, ranked)
        others = [p for p in ranked if not _same(p, gold)]
        if gold is None or rng.random() >= self.gold_share:
            return others[: self.top_k]
        return sorted([*others[: self.top_k - 1], gold], key=lambda p: -p.score)

    def gold(self, question: str, answer: str, ranked: list[Passage]) -> Passage | None:
        """The passage that best matches the question and its answer together, with the score the
        question alone gives it (one below the last ranked passage when the question's search
        missed it: it then goes last)."""
        found = self.retriever.search(f"{question}\n{answer}", 1)
        if not found:
            return None
        score = next((p.score for p in ranked if _same(p, found[0])), None)
        if score is None:
            score = min((p.score for p in ranked), default=0.0) - 1.0
        return dataclasses.replace(found[0], score=score)


def _same(a: Passage, b: Passage | None) -> bool:
    return b is not None and (a.id, a.chunk) == (b.id, b.chunk)


def training_passages(settings: Any, tokenizer: Any = None) -> TrainingPassages | None:
    """The augmenter for a run's data (settings: config.RagConfig), or None when rag.docs is unset."""
    if not settings.docs:
        return None
    return TrainingPassages(Retriever.build(settings, tokenizer), settings, tokenizer)
