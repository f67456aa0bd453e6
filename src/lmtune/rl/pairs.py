"""`lmtune pairs RUN --data FILE --samples N --out PAIRS.jsonl`: preference pairs from the run
itself, judged by the task's own checker.

Each prompt of FILE (alpaca, chat or prompt/completion records: the answer is the reference) is
sampled N times through lmtune's batched generation (the run's template, its stops); with
`greedy`, the run's greedy answer (what eval, generate and serve answer) joins them, and with
`reference`, the record's own answer. Every candidate is scored with the task metric the run trained
for (rewards.py's `task`: SQL by execution with partial credit, JSON by fields, other data exact
match or ROUGE-L). Where the best and the worst score differently, one record {prompt, chosen: best,
rejected: worst (with `cut`, up to its first wrong word, and rejected_partial: true where that cut it
short), score_chosen, score_rejected, chosen_from, rejected_from} is written: the pairs format
`lmtune data check` and train.objective dpo read.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from lmtune.data.preference import PARTIAL
from lmtune.errors import UserError
from lmtune.rl.prompts import load_prompts
from lmtune.rl.rewards import TaskRewards


@dataclass
class PairsResult:
    out: Path
    prompts: int
    pairs: int
    samples: int
    mean_score: float
    best_of_n: float      # share of prompts where at least one sample scored 1


def check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise UserError(f"--out: {out} exists", ["pass another --out, or --overwrite to replace it"])
    if out.exists() and not out.is_file():
        raise UserError(f"--out: {out} is not a file", ["pass the path of a .jsonl file to write"])


SAMPLE, GREEDY, REFERENCE = "sample", "greedy", "reference"


def pick_pair(answers: list[str], scores: list[float], sources: list[str] | None = None
              ) -> tuple[int, int] | None:
    """(best, worst) indices among the non-empty answers, or None when they all score the same.

    Ties are broken toward what the run itself says most: the chosen answer is the model's own
    before the reference, then the most frequent; the rejected one is the greedy answer first (the
    mistake eval and serve make), then the most frequent (a mistake the model keeps making, not one
    random draw)."""
    sources = sources or [SAMPLE] * len(answers)
    kept = [i for i, a in enumerate(answers) if a.strip()]
    if not kept:
        return None
    count = Counter(answers[i].strip() for i in kept)
    best = max(kept, key=lambda i: (scores[i], sources[i] != REFERENCE, count[answers[i].strip()]))
    worst = min(kept, key=lambda i: (scores[i], sources[i] != GREEDY, -count[answers[i].strip()]))
    if scores[best] <= scores[worst] or answers[best].strip() == answers[worst].strip():
        return None
    return best, worst


def cut_at_mistake(chosen: str, rejected: str) -> str:
    """The rejected answer up to and including its first word that departs from the chosen one (the
    whole answer where it only stops early). In DPO the words both answers share cancel out, so the
    cut answer puts the whole push-down on the mistake itself, not on the words that follow it, which
    are mostly right in their own context (as Step-DPO takes the first wrong step)."""
    good, bad = chosen.split(" "), rejected.split(" ")
    first = next((i for i, (a, b) in enumerate(zip(good, bad)) if a != b), min(len(good), len(bad)))
    return " ".join(bad[:first + 1])


def rejected_fields(chosen: str, rejected: str, cut: bool) -> dict:
    """A pair's rejected answer, cut at its first mistake where asked, and rejected_partial where the
    cut shortened it (data/preference.py then trains no end after it)."""
    short = cut_at_mistake(chosen, rejected) if cut else rejected
    return {"rejected": short, **({PARTIAL: True} if short != rejected else {})}


def candidates(gen, examples: list, samples: int, settings, greedy: bool, reference: bool,
               progress: bool) -> tuple[list[list[str]], list[str]]:
    """Per prompt, its `samples` sampled answers, then its greedy answer and its reference (each where
    asked); and the source of each position, the same for every prompt."""
    sampled = gen.generate([ex for ex in examples for _ in range(samples)], settings,
                           progress=progress) if samples else []
    groups = [sampled[k * samples:(k + 1) * samples] for k in range(len(examples))]
    sources = [SAMPLE] * samples
    if greedy:
        first = gen.generate(examples, replace(settings, greedy=True), progress=progress)
        groups, sources = [g + [a] for g, a in zip(groups, first)], sources + [GREEDY]
    if reference:
        groups, sources = [g + [ex.response] for g, ex in zip(groups, examples)], sources + [REFERENCE]
    return groups, sources


def make_pairs(run: str, data: list[str], samples: int, out: Path, overwrite: bool = False,
               max_new_tokens: int = 128, temperature: float = 1.0, batch_size: int = 16, seed: int = 0,
               task: str | None = None, text_metric: str = "exact_match", progress: bool = True,
               rag=None, greedy: bool = False, reference: bool = False, cut: bool = False) -> PairsResult:
    """`rag` (config.RagConfig, rag/inference.rag_settings): each prompt gets its retrieved passages
    before sampling, and the pairs' prompts keep them, so a DPO run on the pairs trains on the
    prompts the model answered (preference objectives add no passages of their own)."""
    from lmtune.generate import GenerationSettings, Generator
    from lmtune.inference_loading import open_path
    from lmtune.run.layout import write_text

    if samples < 0 or samples + greedy + reference < 2:
        raise UserError(f"--samples: got {samples}; a pair needs 2 or more answers per prompt",
                        ["pass --samples 2 or more, or add --greedy and --reference"])
    check_out(out, overwrite)
    loaded = open_path(run)
    task = task or (loaded.config.data.task if loaded.config is not None else None)
    examples = load_prompts(list(data), "auto", "--data").examples     # DataError with file:line first
    gen = Generator.load(run)
    if rag is not None:
        from lmtune.rag.inference import open_retriever, searcher
        from lmtune.rag.prompt import augment_item

        search = searcher(open_retriever(rag, gen.tokenizer), rag.top_k)
        examples = [augment_item(ex, search)[0] for ex in examples]
    rewards = TaskRewards(task, gen.template, max_new_tokens, text_metric)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, greedy=False, temperature=temperature,
                                  top_p=1.0, batch_size=batch_size, seed=seed)
    groups, sources = candidates(gen, examples, samples, settings, greedy, reference, progress)
    n = len(sources)
    answers = [a for g in groups for a in g]
    scores = rewards.score(answers, [ex.response for ex in examples for _ in range(n)])
    own = [s for s, src in zip(scores, sources * len(examples)) if src != REFERENCE]
    lines, best_hits = [], 0
    for k, ex in enumerate(examples):
        group, group_scores = groups[k], scores[k * n:(k + 1) * n]
        best_hits += max(s for s, src in zip(group_scores, sources) if src != REFERENCE) >= 1.0
        picked = pick_pair(group, group_scores, sources)
        if picked is None:
            continue
        b, w = picked
        lines.append(json.dumps({"prompt": ex.prompt_messages(), "chosen": group[b].strip(),
                                 **rejected_fields(group[b].strip(), group[w].strip(), cut),
                                 "score_chosen": group_scores[b],
                                 "score_rejected": group_scores[w], "chosen_from": sources[b],
                                 "rejected_from": sources[w]}, ensure_ascii=False) + "\n")
    check_out(out, overwrite)   # again: sampling took a while; never replace what appeared meanwhile
    write_text(out, "".join(lines))   # a temporary file renamed into place: whole or absent
    return PairsResult(out, len(examples), len(lines), n - reference, sum(own) / max(1, len(own)),
                       best_hits / max(1, len(examples)))
