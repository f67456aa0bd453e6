"""Retrieval speed (lmtune/rag): index build and query latency at 10K, 100K and 1M chunks, and the
prompt tokens retrieval adds at top_k 1, 3 and 5.

    .venv/bin/python benchmarks/rag_retrieval.py                       # 10K and 100K, 200 queries each
    .venv/bin/python benchmarks/rag_retrieval.py --sizes 1000000 --queries 50
    .venv/bin/python benchmarks/rag_retrieval.py --sizes 10000 --prompt-tokens

The corpus is synthetic but shaped like a product catalogue: one document per product, 50-90 words
(a name made of syllables, so names are rare words as real product names are; type, colour,
material, features, price, delivery time, warranty, stock city), each one chunk at chunk_tokens 128
(whitespace words, the fallback chunker, so the numbers measure retrieval and not a tokenizer).
Queries ask about a random product the way a user would ("How much does the Velkaro kettle cost?").
Each size: loading the JSONL, chunking, the BM25 index (bm25s) (each timed on its own up to 100K),
the first build (all three + the cache written), the cached index read again (what every later run
pays), then `Retriever.search(question, 3)` timed one query at a time, in wall time and in the
process's CPU time (the machine is shared: wall time includes the time other jobs held the cores),
next to bm25s' own `BM25.retrieve` on the same index and words (the reference in this script).
The reference is the 200-500 ms per query the fine-tuning tutorial quotes for a retrieval step;
each latency is printed as a share of 200 ms. JSON lines on stdout, one per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

REFERENCE_MS = 200.0   # the low end of the tutorial's 200-500 ms per retrieval
SYLLABLES = ["ka", "ro", "ve", "lin", "tor", "sa", "mi", "del", "qu", "ar", "no", "ex", "zu", "pla", "ston", "bri",
             "fen", "go", "lu", "mar", "ti", "vo", "cen", "dra", "hal", "ist", "or", "pe", "ryn", "sol"]
TYPES = ["kettle", "toaster", "blender", "lamp", "chair", "desk", "backpack", "jacket", "boot", "tent", "drill",
         "saw", "speaker", "headphone", "monitor", "keyboard", "mouse", "router", "camera", "tripod", "bicycle",
         "helmet", "mattress", "pillow", "blanket", "pan", "pot", "knife", "grinder", "scale", "heater", "fan",
         "humidifier", "vacuum", "mop", "shelf", "cabinet", "mirror", "clock", "watch", "wallet", "umbrella"]
COLOURS = ["red", "blue", "green", "black", "white", "grey", "silver", "olive", "navy", "amber", "teal", "sand"]
MATERIALS = ["steel", "aluminium", "oak", "bamboo", "cotton", "wool", "leather", "glass", "ceramic", "nylon"]
FEATURES = ["a detachable cable", "a two-year battery", "a foldable frame", "a water-resistant coating",
            "a quiet motor", "an adjustable height", "a timer with auto shut-off", "replaceable filters",
            "a magnetic lid", "a non-slip base", "USB-C charging", "a child lock", "a carry handle",
            "three speed settings", "a washable cover", "an energy-saving mode", "a reinforced seam"]
CITIES = ["Berlin", "Lyon", "Porto", "Gdansk", "Utrecht", "Malmo", "Graz", "Turin", "Leeds", "Brno"]
QUESTIONS = ["How much does the {name} {type} cost?", "When does the {name} {type} ship?",
             "What warranty comes with the {name} {type}?", "Which colours does the {name} {type} come in?",
             "Is the {name} {type} in stock in {city}?", "What is the {name} {type} made of?"]


def product(rng: random.Random, i: int) -> dict:
    name = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize() + str(i % 97)
    kind = rng.choice(TYPES)
    feats = rng.sample(FEATURES, rng.randint(2, 4))
    text = (f"The {name} {kind} is a {rng.choice(COLOURS)} {kind} made of {rng.choice(MATERIALS)}. "
            f"It comes with {', '.join(feats[:-1])} and {feats[-1]}. "
            f"It weighs {rng.randint(2, 90) / 10} kg and measures {rng.randint(10, 120)} by {rng.randint(10, 90)} cm. "
            f"The {name} costs {rng.randint(5, 900)} euros and ships within {rng.randint(1, 14)} days "
            f"from our warehouse in {rng.choice(CITIES)}. It carries a {rng.randint(1, 5)} year warranty; "
            f"returns are accepted within {rng.choice([14, 30, 60])} days. Also available in "
            f"{rng.choice(COLOURS)} and {rng.choice(COLOURS)}.")
    return {"id": f"p{i}", "text": text, "name": name, "type": kind}


def write_corpus(path: Path, n: int, seed: int = 0) -> list[dict]:
    """n products to `path` (JSONL); returns (name, type) of each for the queries."""
    rng = random.Random(seed)
    keys = []
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n):
            p = product(rng, i)
            fh.write(json.dumps({"id": p["id"], "text": p["text"]}) + "\n")
            keys.append({"name": p["name"], "type": p["type"]})
    return keys


def questions(keys: list[dict], n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [rng.choice(QUESTIONS).format(city=rng.choice(CITIES), **rng.choice(keys)) for _ in range(n)]


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def emit(row: dict) -> None:
    print(json.dumps(row), flush=True)


def per_query(search, qs: list[str]) -> tuple[list[float], list[float]]:
    """Sorted wall and CPU milliseconds of each query (CPU: the process's, so the time other jobs
    held the shared cores is left out; a thread pool's work is counted)."""
    lat, cpu = [], []
    for q in qs:
        c = time.process_time()
        _, t = timed(search, q)
        cpu.append((time.process_time() - c) * 1000)
        lat.append(t * 1000)
    return sorted(lat), sorted(cpu)


def bm25s_retrieve(retriever, question: str, k: int):
    """The reference: bm25s' own `retrieve` on the same index and words."""
    from lmtune.rag.index import words

    found = [w for w in words(question) if w in retriever.bm25.vocab_dict]
    return retriever.bm25.retrieve([found], k=k, show_progress=False, n_threads=1) if found else None


def bench_size(n: int, n_queries: int, work: Path, phases: bool = True, reference: bool = True) -> None:
    from lmtune.config import RagConfig
    from lmtune.rag.docs import chunk_documents, load_documents
    from lmtune.rag.index import build_bm25
    from lmtune.rag.retrieve import Retriever

    path = work / f"catalogue-{n}.jsonl"
    keys, t_write = timed(write_corpus, path, n)
    settings = RagConfig(docs=str(path), chunk_tokens=128, chunk_overlap=16, top_k=3)
    t_load = t_chunk = t_index = None
    if phases:   # each step of the first build on its own (the build below does them all again)
        docs, t_load = timed(load_documents, path)
        chunks, t_chunk = timed(chunk_documents, docs, 128, 16, None)
        _, t_index = timed(build_bm25, chunks)
        del docs, chunks
    cold, t_cold = timed(Retriever.build, settings)      # the first run: load + chunk + index + cache write
    assert not cold.cached
    del cold
    warm, t_warm = timed(Retriever.build, settings)      # every later run: hash the docs, read the cache
    assert warm.cached
    qs = questions(keys, n_queries)
    warm.search(qs[0], 3)                                 # first call pays bm25s' lazy set-up
    lat, cpu = per_query(lambda q: warm.search(q, 3), qs)
    hits = 0
    ref_lat, ref_cpu = per_query(lambda q: bm25s_retrieve(warm, q, 3), qs) if reference else (None, None)
    # how often the product asked about is in the top 3 (its name is in the question)
    for q in qs[:200]:
        name = next(w for w in q.split() if w[:1].isupper() and any(c.isdigit() for c in w))
        hits += any(name in p.text for p in warm.search(q, 3))
    mean = statistics.fmean(lat)
    r2 = lambda x: None if x is None else round(x, 2)   # noqa: E731
    emit({"chunks": len(warm.chunks), "docs_mb": round(path.stat().st_size / 2**20, 1), "write_s": round(t_write, 1),
          "load_s": r2(t_load), "chunk_s": r2(t_chunk), "index_s": r2(t_index),
          "first_build_s": round(t_cold, 2), "cached_build_s": round(t_warm, 2), "queries": len(lat),
          "query_ms_mean": round(mean, 2), "query_ms_p50": round(lat[len(lat) // 2], 2),
          "query_ms_p95": round(lat[int(len(lat) * 0.95) - 1], 2), "share_of_200ms": round(mean / REFERENCE_MS, 4),
          "query_cpu_ms_mean": round(statistics.fmean(cpu), 2),
          "query_cpu_ms_p95": round(cpu[int(len(cpu) * 0.95) - 1], 2),
          **({"bm25s_retrieve_ms_mean": round(statistics.fmean(ref_lat), 2),
              "bm25s_retrieve_cpu_ms_mean": round(statistics.fmean(ref_cpu), 2),
              "bm25s_retrieve_cpu_ms_p95": round(ref_cpu[int(len(ref_cpu) * 0.95) - 1], 2)} if reference else {}),
          "asked_product_in_top3": round(hits / min(200, len(qs)), 3), "max_rss_gib": round(rss_gib(), 2),
          "load_avg_1m": round(os.getloadavg()[0], 1)})
    path.unlink()


def bench_prompt_tokens(work: Path, n: int = 10_000, n_queries: int = 200) -> None:
    """Tokens retrieval adds to a prompt, with the embedded base's tokenizer chunking at 128."""
    from transformers import AutoTokenizer

    from lmtune.config import RagConfig
    from lmtune.models import resolve_model_path
    from lmtune.rag.prompt import augment
    from lmtune.rag.retrieve import Retriever

    tok = AutoTokenizer.from_pretrained(resolve_model_path("tiny"))
    path = work / "catalogue-tokens.jsonl"
    keys = write_corpus(path, n)
    r = Retriever.build(RagConfig(docs=str(path), chunk_tokens=128, chunk_overlap=16), tok)
    qs = questions(keys, n_queries)
    for k in (1, 3, 5):
        added = [len(tok(augment(q, r.search(q, k)))["input_ids"]) - len(tok(q)["input_ids"]) for q in qs]
        emit({"top_k": k, "chunk_tokens": 128, "prompt_tokens_added_mean": round(statistics.fmean(added), 1),
              "max": max(added),
              "question_tokens_mean": round(statistics.fmean(len(tok(q)["input_ids"]) for q in qs), 1)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--no-reference", action="store_true", help="skip timing bm25s' own retrieve")
    ap.add_argument("--phases-up-to", type=int, default=100_000,
                    help="time loading, chunking and indexing on their own up to this size (it builds twice)")
    ap.add_argument("--prompt-tokens", action="store_true", help="only the prompt tokens at top_k 1/3/5")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="rag-bench-") as tmp:
        work = Path(tmp)
        os.environ["LMTUNE_CACHE_DIR"] = str(work / "cache")   # never the user's cache
        if args.prompt_tokens:
            bench_prompt_tokens(work)
            return
        for n in args.sizes:
            bench_size(n, args.queries, work, phases=n <= args.phases_up_to, reference=not args.no_reference)


if __name__ == "__main__":
    main()
