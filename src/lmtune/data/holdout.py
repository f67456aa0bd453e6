"""The splits drawn from the training data (a test split held out so that every run scores the
user's own data, and the validation split), and the warnings about splits too small or
overlapping to trust.

Test size rule (when there is no data.test and no data.task, and data.test_size is not set):
    10% of the deduplicated training examples, at least 20 when that leaves 80% to train on
    (else a fifth), at most 200; none below 10 examples.
        60 -> 12,  100 -> 20,  500 -> 50,  1,000 -> 100,  5,000 -> 200
Seeded by data.seed (its own stream, independent of the validation split). The held-out examples
are never trained on and never used for validation or checkpoint selection: they are removed
before the validation split is drawn, written to RUN/heldout_test.jsonl, and scored (exact match
and ROUGE-L, base vs tuned) by the evaluation at the end of `lmtune train` and by `lmtune eval RUN`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from lmtune.data.formats import Example
from lmtune.run.layout import write_text

HELDOUT_FILE = "heldout_test.jsonl"
SHARE, MIN_SIZE, MAX_SIZE, MIN_EXAMPLES = 0.10, 20, 200, 10
SMALL_SPLIT = 20   # fewer examples than this in a validation or test split: a warning
# The automatic validation split (data.val_split of the training data) holds at most this many
# examples: it is evaluated at every eval step and once more at the end, and beyond a few thousand
# examples a loss average gains little precision while its cost grows with the data
# (docs/evaluation.md, "The validation split"). A validation file the user gives is never cut.
VAL_MAX = 2000


def heldout_size(n: int, configured: int | None = None) -> int:
    """Examples to hold out of `n` (see the module doc); `configured` (data.test_size) wins."""
    if configured is not None:
        return max(0, min(configured, n - 1))
    if n < MIN_EXAMPLES:
        return 0
    return min(MAX_SIZE, max(round(n * SHARE), min(MIN_SIZE, n // 5)))


def hold_out(examples: list[Example], size: int, seed: int) -> tuple[list[Example], list[Example]]:
    """(train, test): `size` examples drawn with `seed`; both keep the file order."""
    if size <= 0:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(f"heldout-test:{seed}").shuffle(order)
    held = set(order[:size])
    return ([ex for i, ex in enumerate(examples) if i not in held],
            [ex for i, ex in enumerate(examples) if i in held])


def validation_size(n: int, share: float, cap: int | None = VAL_MAX) -> int:
    """Examples the automatic validation split holds of `n`: `share` of them, at least one when
    share > 0 and n >= 2, at most `cap` (None: no cap), never all of them."""
    if share <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * share)), n if cap is None else cap)


def split_train_validation(examples: list, share: float, seed: int, cap: int | None = VAL_MAX
                           ) -> tuple[list, list]:
    """Shuffle with `seed` and hold out validation_size(len(examples), share, cap) examples. Order
    inside each split follows the file order. The same seed draws a capped split from the front of
    the same shuffle, so it is a subset of the split an uncapped draw would hold. The pipeline
    calls it on example positions (arrow_pipeline.py)."""
    n_val = validation_size(len(examples), share, cap)
    if not n_val:
        return list(examples), []
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_val])
    train = [ex for i, ex in enumerate(examples) if i not in held]
    validation = [ex for i, ex in enumerate(examples) if i in held]
    return train, validation


def to_record(ex: Example) -> dict:
    """The example as a record of its own format (what load_examples reads back)."""
    if ex.format == "chat":
        return {**ex.fields, "messages": ex.messages}
    return dict(ex.fields)


def write_heldout(path: Path, examples: list[Example]) -> None:
    write_text(path, "".join(json.dumps(to_record(ex), ensure_ascii=False) + "\n" for ex in examples))


def split_warnings(data_cfg, stats: dict, n_validation: int, test_count: int | None,
                   test_overlap: int) -> list[str]:
    """Warnings (not errors) about splits a user should not trust; `test_count` None: no test at all."""
    out = []
    if data_cfg.task and data_cfg.train:
        out.append(f"data.task={data_cfg.task} and data.train are both set: training uses your files, "
                   f"validation/test files and the scorer come from the {data_cfg.task} task where you "
                   "set none; unset one of them if that is not what you meant")
    if 0 < n_validation < SMALL_SPLIT:
        out.append(f"the validation split has {n_validation} examples (< {SMALL_SPLIT}): its loss, and the "
                   "checkpoint chosen by it, are noisy; give data.validation or raise data.val_split")
    if test_count is None:
        out.append("no test split: nothing will score generated answers (give data.test, or at least "
                   f"{MIN_EXAMPLES} training examples and data.test_size unset so that lmtune holds "
                   "some out)")
    elif 0 < test_count < SMALL_SPLIT:
        out.append(f"the test split has {test_count} examples (< {SMALL_SPLIT}): one answer moves exact "
                   f"match by {100 / max(1, test_count):.0f} points; give data.test with more examples")
    if test_overlap:
        out.append(f"{test_overlap} of {test_count} test prompts also appear in the training data: the "
                   "test score partly measures memorisation")
    return out
