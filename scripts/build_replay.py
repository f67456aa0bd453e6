"""Build the bundled replay sets for `data.replay` (lmtune/data/replay.py), byte-identically:

    src/lmtune/assets/tasks/general/replay.jsonl          general text: {"text": ...}
    src/lmtune/assets/tasks/general/replay_prompts.jsonl  general prompts: {"prompt": ...}

The text is what the embedded base was pretrained on, freshly drawn: generated English prose
(scripts/base/synth_text.py, seeds the base build never used) and Python standard-library
docstrings (scripts/base/stdlib_text.py). It shares no sentence with the forgetting probe
(general/probe.jsonl), which this script checks: replaying the probe would hide forgetting, not
prevent it. The prompts ask for ordinary prose on topics of the same two kinds; `data.replay.source:
self` trains on the base model's own greedy answers to them.

    python scripts/build_replay.py            # writes both files
    python scripts/build_replay.py --check    # fails if the shipped files differ from a rebuild
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

from base import pools as P  # noqa: E402
from base import stdlib_text, synth_text  # noqa: E402

OUT = ROOT / "src" / "lmtune" / "assets" / "tasks" / "general"
SEED = 20261129          # not a seed of the base build's synthetic chunks
PROSE, DOCSTRINGS, PROMPTS = 400, 200, 300
MAX_CHARS = 700

_PROMPT_TEMPLATES = (
    "Write a few sentences about a day in {city}.",
    "Describe a {place} in the morning.",
    "Tell a short story about {first}, who works as a {job}.",
    "What do people like to eat in {country}?",
    "Write a short letter from {first} to {name2}.",
    "Explain in plain words what the Python module {module} is for.",
    "Describe a {adj} {animal} in two sentences.",
    "What happens at the {place} on a {weekday}?",
)


def _sentences(text: str) -> set[str]:
    return {s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 20}


def _docstrings(rng: random.Random) -> list[str]:
    docs = [d["text"].strip() for d in stdlib_text.collect()]
    docs = [d[:MAX_CHARS].rsplit(" ", 1)[0] if len(d) > MAX_CHARS else d for d in docs if len(d) >= 120]
    return rng.sample(docs, DOCSTRINGS)


def build() -> tuple[list[dict], list[dict]]:
    rng = random.Random(SEED)
    prose = [synth_text.paragraph(rng) for _ in range(PROSE)]
    texts = prose + _docstrings(rng)
    rng.shuffle(texts)
    texts = list(dict.fromkeys(texts))
    modules = sorted({d.split("/")[0].removesuffix(".py") for d in
                      (p.relative_to(stdlib_text.stdlib_root()).as_posix()
                       for p in stdlib_text.stdlib_root().glob("*.py")) if not d.startswith("_")})
    prompts = []
    for i in range(PROMPTS):
        slots = synth_text._slots(rng)
        slots["module"] = rng.choice(modules)
        prompts.append(_PROMPT_TEMPLATES[i % len(_PROMPT_TEMPLATES)].format(**slots))
    prompts = list(dict.fromkeys(prompts))
    return [{"text": t} for t in texts], [{"prompt": p} for p in prompts]


def check_disjoint(texts: list[dict]) -> None:
    probe = [json.loads(line)["text"] for line in (OUT / "probe.jsonl").read_text().splitlines()]
    probe_sentences = set().union(*(_sentences(p) for p in probe))
    shared = probe_sentences & set().union(*(_sentences(t["text"]) for t in texts))
    if shared:
        raise SystemExit(f"replay text shares {len(shared)} sentences with the probe, e.g. {sorted(shared)[0]!r}")


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the shipped files, write nothing")
    args = ap.parse_args(argv)
    texts, prompts = build()
    check_disjoint(texts)
    files = {OUT / "replay.jsonl": _jsonl(texts), OUT / "replay_prompts.jsonl": _jsonl(prompts)}
    if args.check:
        stale = [str(p) for p, text in files.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
        print("up to date" if not stale else f"differs from a rebuild: {', '.join(stale)}")
        return 1 if stale else 0
    for path, text in files.items():
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path} ({len(text.splitlines())} records, {len(text.encode()) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
