"""The data pipeline: files -> validated examples -> template -> input_ids + completion_mask.
One pipeline, at any size (streamed, batched, cached, memory-mapped); `lmtune train`, `lmtune eval`
and `lmtune data check` all go through it.

    prepare.py         DataConfig -> datasets.Dataset train/validation + stats (what train.py calls);
                       small files as examples or token rows (eval's test sets, few-shot shots)
    readers.py         JSONL / JSON / CSV / Parquet / directories -> records with their file:line
    stream.py          files -> units of work (JSON Lines in blocks of whole lines)
    formats.py         detect alpaca | chat | prompt_completion | text, validate, normalise to Example
    records.py         one validating pass (worker processes) -> Arrow file of valid records + keys
    arrow_pipeline.py  dedupe / held-out test / validation split on positions; the cached result
    holdout.py         the seeded validation and held-out test splits, and their warnings
    templates.py       alpaca, chatml, the model's chat template (and raw); saved with the run
    tokenize.py        the token rules: completion mask (trained = answer + eos), pad token, statistics
    tokenize_batch.py  a batch of examples -> ids + masks
    token_shards.py    tokenizing in parallel into Arrow files -> memory-mapped datasets
    parallel.py        the ordered, bounded fork pool both passes use
    cache.py           where prepared data is kept and how it is keyed
    check.py           `lmtune data check`: what a dataset holds and everything wrong with it
    replay.py          data.replay: general text (or the base's own answers) mixed into training

The list-based form of these steps (every example an object, one at a time) is the reference the
tests compare against: tests/data_reference.py.

Nothing here imports torch; `datasets`/`transformers` are imported only inside the functions
that need them.
"""

from lmtune.data.formats import FORMATS, Example, LoadedData
from lmtune.data.holdout import split_train_validation
from lmtune.data.prepare import PreparedData, load_split, prepare_datasets, resolve_files, tokenize_files
from lmtune.data.templates import (
    TEMPLATE_NAMES,
    Segment,
    Template,
    TemplateError,
    get_template,
    template_from_dict,
)
from lmtune.data.tokenize import encode_prompt, ensure_pad_token

__all__ = [
    "FORMATS", "TEMPLATE_NAMES", "Example", "LoadedData", "PreparedData", "Segment", "Template",
    "TemplateError", "encode_prompt", "ensure_pad_token", "get_template", "load_split", "prepare_datasets",
    "resolve_files", "split_train_validation", "template_from_dict", "tokenize_files",
]
