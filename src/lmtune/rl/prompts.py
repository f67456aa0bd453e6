"""GRPO's training data: the task's prompts, each with its reference answer.

Records of any SFT format that has an answer (alpaca, chat, prompt_completion: the bundled task's
train split or data.train) become {prompt: the prompt rendered by the run's template, reference:
the answer}. TRL samples rl.num_generations answers per prompt; the rewards (rewards.py) read the
`reference` column.
"""

from __future__ import annotations

from lmtune.data import load_split, resolve_files
from lmtune.data.preference import PreferenceData
from lmtune.errors import DataError
from lmtune.train.hparams import DataSize


def load_prompts(paths: list[str], data_format: str, what: str):
    """The examples of `paths` (DataError listing every bad record, or for plain text)."""
    loaded = load_split(paths, data_format, what)
    if loaded.format == "text" or not loaded.examples:
        raise DataError(f"{what}: no prompts with answers to score",
                        [f"{', '.join(map(str, paths))}: give alpaca, chat or prompt/completion records "
                         "(the answer is the reference the rewards compare with)"])
    return loaded


def prepare_prompts(data_cfg, template_for, augment=None) -> PreferenceData:
    """The training split's prompts and references, rendered by `template_for(data format)` (no
    validation split: GRPO's own evaluation would sample again; the after-train evaluation scores
    the test split). `augment` (rag/training.py, with rag.docs): each prompt carries its retrieved
    passages, exactly as an SFT run's prompts and as generate/serve/eval put them."""
    from datasets import Dataset

    files = resolve_files(data_cfg)
    loaded = load_prompts(files["train"], data_cfg.format, "grpo prompt data")
    template = template_for(loaded.format)
    examples = augment(loaded.examples) if augment is not None else loaded.examples
    rows = [{"prompt": str(template.render_prompt(ex)), "reference": ex.response} for ex in examples]
    stats = {"objective": "grpo", "format": "prompts", "records": {"train": len(rows)},
             "examples": {"train": len(rows), "validation": 0}, "template": template.name, "warnings": []}
    if augment is not None:
        stats["augment"] = augment.describe()
    return PreferenceData(Dataset.from_list(rows), None, template, stats)


def prompt_data_size(dataset, tokenizer, max_length: int, num_generations: int) -> DataSize:
    """hparams.DataSize of the prompt split, counting each prompt once per sampled answer (a
    micro-batch holds one prompt's group), so `train.epochs: auto` sizes steps right."""
    lengths = [len(tokenizer(p + r, add_special_tokens=False)["input_ids"]) + 1
               for p, r in zip(dataset["prompt"], dataset["reference"])]
    n = num_generations
    return DataSize(n * len(lengths), n * sum(lengths), max_length, False,
                    n * sum(1 for k in lengths if k > max_length // 2))
