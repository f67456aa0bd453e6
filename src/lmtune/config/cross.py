"""The rules of a config that involve more than one key (each field's own type and range are
pydantic's, in config/__init__.py): appended to `problems` as one line per key, after the fields
validated, so every problem is reported at once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lmtune.config import Config


def check_cross(cfg: Config, problems: list[str]) -> None:
    """Rules that involve more than one key."""
    if cfg.lora.target_modules == [] or cfg.lora.target_modules == "":
        problems.append("lora.target_modules: empty; give module names or 'all-linear'")
    if isinstance(cfg.lora.target_modules, str) and cfg.lora.target_modules != "all-linear":
        cfg.lora.target_modules = [cfg.lora.target_modules]
    if cfg.data.task is None and not cfg.data.train:
        problems.append("data.train: no training data; set data.train to a file or data.task to sql/json")
    if cfg.train.max_steps == 0:
        problems.append("train.max_steps: got 0, which trains nothing; use -1 (train for train.epochs) or a "
                        "positive step count")
    replay = cfg.data.replay
    if replay.ratio > 0 and replay.source not in ("general", "self") and not Path(replay.source).exists():
        problems.append(f"data.replay.source: {replay.source!r} is not general, self or an existing file")
    if cfg.eval.forgetting_fail < cfg.eval.forgetting_warn:
        problems.append(f"eval.forgetting_fail: got {cfg.eval.forgetting_fail}, must be >= "
                        f"eval.forgetting_warn ({cfg.eval.forgetting_warn})")
    if isinstance(cfg.distributed.nproc, str) and cfg.distributed.nproc != "auto":
        problems.append(f"distributed.nproc: got {cfg.distributed.nproc!r}, expected a number >= 1 or auto")
    if cfg.train.objective != "sft" and cfg.data.replay.ratio > 0:
        problems.append(f"data.replay.ratio: replay mixes SFT examples into the training data; train.objective "
                        f"{cfg.train.objective} trains on preference records; set data.replay.ratio=0")
    if cfg.train.objective in ("dpo", "orpo", "kto") and cfg.rag.docs:
        # preference records are already rendered text pairs: retrieval would have to choose the
        # passages both answers were written against, which only the records' author knows
        problems.append(f"rag.docs: train.objective {cfg.train.objective} trains on preference records as "
                        "they are and adds no passages; put the passages in the records' prompts and unset "
                        "rag.docs (sft and grpo retrieve for each prompt)")
    if cfg.train.objective == "kto" and cfg.train.batch_size == 1:
        problems.append("train.batch_size: got 1; kto compares each answer with another one of the same "
                        "micro-batch (its KL term), so it needs 2 or more")
    if cfg.train.objective == "grpo":
        check_rl(cfg, problems)
    no_val = not cfg.data.validation and cfg.data.val_split == 0 and cfg.data.task is None
    if no_val and (cfg.train.eval_steps or cfg.train.early_stopping_patience):
        key = "train.eval_steps" if cfg.train.eval_steps else "train.early_stopping_patience"
        problems.append(f"{key}: needs validation data; set data.validation or data.val_split > 0")
    if cfg.rag.chunk_overlap >= cfg.rag.chunk_tokens:
        problems.append(f"rag.chunk_overlap: got {cfg.rag.chunk_overlap}, must be below rag.chunk_tokens "
                        f"({cfg.rag.chunk_tokens})")


def check_rl(cfg: Config, problems: list[str]) -> None:
    rl, t = cfg.rl, cfg.train
    if not rl.reward:
        problems.append("rl.reward: empty; give task, format, length or path/to/file.py:function")
    for i, name in enumerate(rl.reward):
        if name not in ("task", "format", "length") and ".py:" not in name:
            problems.append(f"rl.reward[{i}]: got {name!r}; allowed: task, format, length or "
                            "path/to/file.py:function (your own reward function)")
    if rl.reward_weights is not None and len(rl.reward_weights) != len(rl.reward):
        problems.append(f"rl.reward_weights: {len(rl.reward_weights)} weights for {len(rl.reward)} rewards "
                        f"({', '.join(rl.reward)}); give one per reward")
    if t.batch_size and t.batch_size % rl.num_generations:
        # a micro-batch holds whole groups: each answer is scored against the others of its prompt
        problems.append(f"train.batch_size: got {t.batch_size}; under grpo it counts sampled answers and must "
                        f"be a multiple of rl.num_generations ({rl.num_generations}); leave it unset for "
                        f"{rl.num_generations} (one prompt's group per micro-batch)")
