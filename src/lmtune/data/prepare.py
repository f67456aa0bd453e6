"""DataConfig -> tokenized train/validation datasets for TRL, plus the numbers worth reporting.

    files -> load + validate (all problems at once) -> dedupe -> split -> template -> tokenize

The returned datasets have exactly the columns `input_ids` and `completion_mask`; train.py gives
them to SFTTrainer with `SFTConfig(completion_only_loss=True)` (see tokenize.py for why). The
steps run in arrow_pipeline.py; `load_split` is the list form, for small files (eval, advise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lmtune.data.formats import LoadedData, load_examples
from lmtune.data.templates import Template
from lmtune.errors import DataError

if TYPE_CHECKING:
    import datasets

    from lmtune.config import DataConfig


@dataclass
class PreparedData:
    train: "datasets.Dataset"
    validation: "datasets.Dataset | None"
    template: Template
    stats: dict[str, Any]  # written to the run as data_stats.json
    test_examples: list = field(default_factory=list)  # held out of train (holdout.py), not tokenized


def resolve_files(data_cfg: "DataConfig") -> dict[str, list[str]]:
    """train/validation/test file lists; a bundled task fills the splits the user left empty."""
    files = {"train": list(data_cfg.train), "validation": list(data_cfg.validation),
             "test": list(data_cfg.test)}
    if data_cfg.task:
        from lmtune.tasks import task_files  # the tasks package owns the bundled files

        for split, path in task_files(data_cfg.task).items():
            if split in files and not files[split]:
                files[split] = [str(path)]
    return files


def load_split(paths: list[str], format: str = "auto", what: str = "data") -> LoadedData:
    """Load and validate; raise DataError listing every problem."""
    loaded = load_examples(paths, format)
    problems = list(loaded.problems)
    if not problems and not loaded.examples:
        problems.append(f"{', '.join(paths) or '(no files)'}: no {what} examples")
    if problems:
        raise DataError(problem_summary(loaded, what, problems), problems)
    return loaded


def problem_summary(loaded: LoadedData, what: str = "data", problems: list[str] | None = None) -> str:
    """`problems`: the list the error shows, when it has more than `loaded.problems` (e.g. "no examples")."""
    bad = loaded.records - len(loaded.examples)
    n = len(loaded.problems if problems is None else problems)
    return (f"{n} problem{'s' if n != 1 else ''} in the {what}: {bad} of {loaded.records} records "
            f"are bad; fix each line below")


def prepare_datasets(data_cfg: "DataConfig", tokenizer: Any, template: Template | None = None
                     ) -> PreparedData:
    """Load, validate, dedupe, split and tokenize. `template` None -> built from data_cfg.template
    (auto resolved against the data format and the tokenizer); the one used is in the result.
    Call `ensure_pad_token(tokenizer)` before (models.py), so the run saves the final tokenizer.
    The work is done at scale by arrow_pipeline.py (streamed, batched, cached, memory-mapped)."""
    from lmtune.data.arrow_pipeline import prepare_arrow

    return prepare_arrow(data_cfg, tokenizer, template)


def summary_line(stats: dict[str, Any]) -> str:
    """One line on what training will see and what was dropped on the way (duplicates, examples
    truncated at max_length, examples that lost their whole answer), from data_stats.json's numbers."""
    records = stats.get("records", {}).get("train", 0)
    examples = stats.get("examples", {})
    tokens = stats.get("tokens", {}).get("train", {})
    dropped = []
    dup = stats.get("duplicates_removed", {}).get("train", 0)
    if dup:
        dropped.append(f"{dup} duplicate{'s' if dup != 1 else ''} dropped")
    if tokens.get("truncated"):
        cut = f"{tokens['truncated']} truncated at data.max_length {stats.get('max_length')}"
        if tokens.get("dropped"):
            cut += f", {tokens['dropped']} of them dropped (no answer token left)"
        dropped.append(cut)
    val = examples.get("validation", 0)
    line = f"data: {records} training records -> {examples.get('train', 0)} training examples"
    line += f", {val} validation" if val else ""
    line += f" ({'; '.join(dropped)})" if dropped else ""
    if dropped and examples.get("train", 0) + val < records / 2:
        line += "; fewer than half the records remain: see lmtune data check"
    return line
