"""Fine-tuning methods. Each module only prepares the model; the training recipe is shared.

    full   every weight trains
    lora   frozen base + low-rank adapters (peft)
    qlora  4-bit NF4 frozen base (bitsandbytes) + adapters
"""

from __future__ import annotations

from lmtune.config import Config
from lmtune.run.artifacts import count_parameters as count


def prepare(model, cfg: Config):
    """Return the model ready to train with `cfg.method`."""
    # Only the chosen method's module is imported (lora/qlora load peft, qlora bitsandbytes): recipe
    # imports this package at the top, and `lmtune train` checks its inputs before those libraries load.
    if cfg.method == "full":
        from lmtune.train.methods.full import prepare as fn
    elif cfg.method == "lora":
        from lmtune.train.methods.lora import prepare as fn
    else:
        from lmtune.train.methods.qlora import prepare as fn
    return fn(model, cfg)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, base parameters): see lmtune.run.artifacts.count_parameters."""
    return count(model)
