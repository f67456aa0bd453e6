"""Deduplicate examples and split train/validation, reproducibly from a seed."""

from __future__ import annotations

import random
from dataclasses import dataclass

from lmtune.data.formats import Example


@dataclass
class DedupeResult:
    kept: list[Example]
    removed: int  # exact duplicates dropped (content equal up to whitespace)
    first_duplicates: list[tuple[str, str]]  # (duplicate source, source of the copy kept), a few


def dedupe(examples: list[Example], keep_samples: int = 5) -> DedupeResult:
    """Keep the first copy of each example; duplicates are equal after collapsing whitespace."""
    seen: dict[str, str] = {}
    kept, samples = [], []
    for ex in examples:
        key = ex.content_key()
        if key in seen:
            if len(samples) < keep_samples:
                samples.append((ex.source, seen[key]))
            continue
        seen[key] = ex.source
        kept.append(ex)
    return DedupeResult(kept, len(examples) - len(kept), samples)


def drop_overlap(validation: list[Example], train: list[Example]) -> tuple[list[Example], int]:
    """Remove validation examples that also appear in train: they would make the
    validation loss look better than it is (an early bundled SQL task had 178 of
    its 200 test prompts in train)."""
    train_keys = {ex.content_key() for ex in train}
    kept = [ex for ex in validation if ex.content_key() not in train_keys]
    return kept, len(validation) - len(kept)


def conflicting_prompts(examples: list[Example]) -> int:
    """How many prompts appear with more than one different answer (a sign of noisy labels)."""
    answers: dict[str, set[str]] = {}
    for ex in examples:
        if ex.format != "text":
            answers.setdefault(ex.prompt_key(), set()).add(ex.content_key())
    return sum(1 for a in answers.values() if len(a) > 1)


def split_train_validation(examples: list[Example], share: float, seed: int
                           ) -> tuple[list[Example], list[Example]]:
    """Shuffle with `seed` and hold out `share` of the examples (at least one when share > 0 and
    there are two or more examples). Order inside each split follows the file order."""
    if share <= 0 or len(examples) < 2:
        return list(examples), []
    n_val = min(len(examples) - 1, max(1, round(len(examples) * share)))
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_val])
    train = [ex for i, ex in enumerate(examples) if i not in held]
    validation = [ex for i, ex in enumerate(examples) if i in held]
    return train, validation
