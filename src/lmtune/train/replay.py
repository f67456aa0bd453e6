"""data.replay wired into training: rank 0 draws the replay examples once the base is loaded (for
`self`, that base answers the bundled prompts before any fine-tuning), every rank adds them to the
training split only. What the sources are and how they are drawn: lmtune/data/replay.py."""

from __future__ import annotations

import json

from lmtune.config import Config
from lmtune.data import replay
from lmtune.evaluate.run import inference_mode
from lmtune.generate import GenerationSettings, Generator
from lmtune.run.layout import RunDir, write_text
from lmtune.train import distributed


def add_replay(cfg: Config, run: RunDir, data, model, tokenizer, device, resume: bool) -> None:
    """data.replay (lmtune/data/replay.py): rank 0 draws the replay examples (for `self`, the base
    just loaded answers the bundled prompts) into RUN/replay.jsonl; every rank reads that file and
    adds the examples to the training split only."""
    r = cfg.data.replay
    if r.ratio <= 0:
        return
    import datasets

    path = run / replay.REPLAY_FILE
    if distributed.is_main_process() and not (resume and path.is_file()):
        n = replay.replay_count(r.ratio, data.stats["examples"]["train"])
        answer = lambda prompts: _base_answers(cfg, model, tokenizer, data.template, device, prompts)  # noqa: E731
        records = replay.draw_records(r.source, n, cfg.data.seed, answer)
        write_text(path, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in records))
    distributed.barrier()
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    cols = replay.tokenize_replay(records, data.template, tokenizer, cfg.data.max_length)
    extra = datasets.Dataset.from_dict(cols, features=data.train.features)
    data.train = datasets.concatenate_datasets([data.train, extra])
    data.stats["replay"] = {"source": r.source, "ratio": r.ratio, "examples": len(extra),
                            "tokens": sum(len(x) for x in cols["input_ids"]), "file": replay.REPLAY_FILE}


def _base_answers(cfg: Config, model, tokenizer, template, device, prompts: list[str]) -> list[str]:
    """Greedy answers of the untouched base, through the run's template (data.replay.source self)."""
    if device.kind == "cuda" and model.device.type != "cuda":
        model.to("cuda")
    settings = GenerationSettings(max_new_tokens=cfg.data.replay.max_new_tokens, greedy=True,
                                  batch_size=cfg.train.eval_batch_size)
    with inference_mode(model):
        return Generator(model, tokenizer, template).generate(prompts, settings)
