"""The catalogue task (facts that change after training) scored three ways, side by side:

    base + RAG       the untuned base, the current docs' passages before each question
    tuned, no docs   the run alone: it answers from what it was trained on (docs_v1's facts)
    tuned + docs     the run with the current docs (docs_v2), as it trained with docs_v1

    python benchmarks/catalogue_rag.py RUN [RUN ...] [--docs DOCS] [--limit N] [--out FILE]

Retrieval uses the run's rag settings (top_k, chunking; docs_v2 unless --docs) through the same
Retriever and prompt.augment that training used. Scores: exact match, style, fact accuracy
(lmtune/tasks/catalogue.py), over the test's changed and new facts and for each kind. The base +
RAG row uses the run's template with the adapter off (LoRA) or the embedded base (full).
Appends one JSON line per run to benchmarks/results/catalogue_rag.jsonl (or --out).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from lmtune.config import RagConfig  # noqa: E402
from lmtune.generate import GenerationSettings, Generator  # noqa: E402
from lmtune.rag.prompt import augment_item  # noqa: E402
from lmtune.rag.retrieve import Retriever  # noqa: E402
from lmtune.tasks import get_task, task_files  # noqa: E402


def score(task, generator: Generator, records: list[dict], retriever, top_k: int) -> dict:
    prompts = [r["messages"][:-1] for r in records]
    if retriever is not None:
        prompts = [augment_item(p, lambda q: retriever.search(q, top_k))[0] for p in prompts]
    started = time.perf_counter()
    out = generator.generate(prompts, GenerationSettings(max_new_tokens=32, batch_size=16))
    answers = [task.extract_answer(o) for o in out]
    rows = task.score_examples(answers, records)
    result = {"seconds": round(time.perf_counter() - started, 1), "example": answers[0]}
    for kind in ("all", "changed", "new"):
        picked = [row for row, r in zip(rows, records) if kind == "all" or r["kind"] == kind]
        result[kind] = {m: round(sum(x[m] for x in picked) / len(picked), 3) for m in task.metrics}
    return result


def evaluate(run: str, docs: str, limit: int | None, with_base: bool = True) -> dict:
    task = get_task("catalogue")
    records = [json.loads(line) for line in task_files("catalogue")["test"].open()][:limit]
    tuned = Generator.load(run)
    cfg = json.loads(json.dumps(dataclasses.asdict(tuned_config(run).rag)))
    settings = RagConfig(**{**cfg, "docs": docs})
    retriever = Retriever.build(settings, tuned.tokenizer)
    result = {"run": run, "docs": docs, "top_k": settings.top_k, "examples": len(records)}
    if with_base:
        base = Generator.load(run, use_adapter=False) if (Path(run) / "adapter").is_dir() else \
            Generator(Generator.load("tiny").model, tuned.tokenizer, tuned.template)
        result["base + RAG"] = score(task, base, records, retriever, settings.top_k)
    return {
        **result,
        "tuned, no docs": score(task, tuned, records, None, settings.top_k),
        "tuned + docs": score(task, tuned, records, retriever, settings.top_k),
    }


def tuned_config(run: str):
    from lmtune.inference_loading import open_path

    return open_path(run).config


def table(results: list[dict]) -> str:
    lines = ["| run | setting | exact (all) | exact changed | exact new | style | fact accuracy |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        for setting in ("base + RAG", "tuned, no docs", "tuned + docs"):
            if setting not in r:
                continue
            s = r[setting]
            lines.append(f"| {_name(r['run'])} | {setting} | {s['all']['exact_match']:.3f} | "
                         f"{s['changed']['exact_match']:.3f} | {s['new']['exact_match']:.3f} | "
                         f"{s['all']['style']:.3f} | {s['all']['fact_accuracy']:.3f} |")
    return "\n".join(lines)


def _name(run: str) -> str:
    path = Path(run)
    return path.parent.name if path.name == "run" else path.name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="run directories trained on the catalogue task")
    parser.add_argument("--docs", default=str(task_files("catalogue")["docs_v2"]),
                        help="the documents retrieved from (default: the current catalogue, docs_v2)")
    parser.add_argument("--limit", type=int, default=None, help="score the first N test questions only")
    parser.add_argument("--no-base", action="store_true", help="skip the base + RAG row (it does not depend on the run)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "catalogue_rag.jsonl")
    args = parser.parse_args(argv)
    results = [evaluate(run, args.docs, args.limit, not args.no_base) for run in args.runs]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
