"""The pretraining corpus: stdlib text + generated text, split into train and held-out.

Every random draw comes from `random.Random` seeded with a string naming the seed, the kind and
the chunk index, so the corpus is the same for any number of worker processes and on any
Python 3 (Random's integer and choice methods are stable across versions). The stdlib part
depends on the interpreter's version, which is why build_base.py caches it in the work dir and a
rebuild elsewhere (e.g. on a GPU machine) can reuse that file.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from . import stdlib_text, synth_json, synth_sql, synth_text

# kind -> (document maker, share of generated documents). Text (prose + copying) has the largest
# share: plain English and copying are what fine-tuning leans on most.
SYNTH_KINDS = {"text": (synth_text.document, 0.5), "sql": (synth_sql.document, 0.3),
               "json": (synth_json.document, 0.2)}
CHUNK_DOCS = 500           # documents per generated chunk (the unit of determinism and of work)
HELDOUT_EVERY = 50         # 1 in 50 stdlib files is held out; 1 extra held-out chunk per 50


@dataclass(frozen=True)
class Chunk:
    kind: str
    index: int
    heldout: bool


def stdlib_docs(cache: Path) -> list[dict]:
    """Stdlib documents, read once and cached as JSON lines (reused on other machines)."""
    if cache.exists():
        return [json.loads(line) for line in cache.read_text(encoding="utf-8").splitlines()]
    docs = stdlib_text.collect()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    tmp.replace(cache)
    return docs


def is_heldout_source(source: str) -> bool:
    """Whole files are held out, so no docstring's near-twin from the same file is trained on."""
    return int(hashlib.sha256(source.encode()).hexdigest(), 16) % HELDOUT_EVERY == 0


def synth_chunk(seed: int, chunk: Chunk) -> list[dict]:
    maker = SYNTH_KINDS[chunk.kind][0]
    rng = random.Random(f"lmtune-base/{seed}/{chunk.kind}/{chunk.index}")
    return [maker(rng) | {"source": f"synth:{chunk.kind}"} for _ in range(CHUNK_DOCS)]


def plan_chunks(total_docs: int) -> list[Chunk]:
    """`total_docs` training documents in kind-tagged chunks, plus held-out chunks (negative
    indices, so they never coincide with a training chunk, whatever the size)."""
    chunks = []
    for kind, (_, share) in SYNTH_KINDS.items():
        n = max(1, round(total_docs * share / CHUNK_DOCS))
        chunks += [Chunk(kind, i, False) for i in range(n)]
        chunks += [Chunk(kind, -1 - j, True) for j in range(max(1, n // HELDOUT_EVERY))]
    return chunks


def plain_text(doc: dict) -> str:
    """Text for tokenizer training: chat turns as their contents (special tokens come from the
    template, not from BPE)."""
    if "text" in doc:
        return doc["text"]
    return "\n".join(m["role"] + "\n" + m["content"] for m in doc["messages"])
