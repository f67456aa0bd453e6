"""The data pipeline: files -> validated examples -> template -> input_ids + completion_mask.

    readers.py    JSONL / JSON / CSV / Parquet / directories -> records with their file:line
    formats.py    detect alpaca | chat | prompt_completion | text, validate, normalise to Example
    split.py      dedupe and the seeded train/validation split
    templates.py  alpaca, chatml, the model's chat template (and raw); saved with the run
    tokenize.py   token ids + completion mask (trained = answer + eos), pad token, statistics
    prepare.py    DataConfig -> datasets.Dataset train/validation + stats (what train.py calls)

At scale (prepare.py hands the work to arrow_pipeline.py; `lmtune data check` uses the same parts):
    stream.py          files -> units of work (JSON Lines in blocks of whole lines)
    records.py         one validating pass (worker processes) -> Arrow file of valid records + keys
    arrow_pipeline.py  dedupe / held-out test / validation split on positions; the cached result
    tokenize_batch.py  a batch of examples -> ids + masks (equal to tokenize_example per example)
    token_shards.py    tokenizing in parallel into Arrow files -> memory-mapped datasets
    parallel.py        the ordered, bounded fork pool both passes use
    cache.py           where prepared data is kept and how it is keyed

Nothing here imports torch; `datasets`/`transformers` are imported only inside the functions
that need them.
"""

from lmtune.data.formats import FORMATS, Example, LoadedData, load_examples
from lmtune.data.prepare import PreparedData, load_split, prepare_datasets, resolve_files
from lmtune.data.split import dedupe, split_train_validation
from lmtune.data.templates import (
    TEMPLATE_NAMES,
    Segment,
    Template,
    TemplateError,
    get_template,
    template_from_dict,
)
from lmtune.data.tokenize import encode_prompt, ensure_pad_token, tokenize_example, tokenize_examples

__all__ = [
    "FORMATS", "TEMPLATE_NAMES", "Example", "LoadedData", "PreparedData", "Segment", "Template",
    "TemplateError", "dedupe", "encode_prompt", "ensure_pad_token", "get_template", "load_examples",
    "load_split", "prepare_datasets", "resolve_files",
    "split_train_validation", "template_from_dict", "tokenize_example", "tokenize_examples",
]
