"""Full fine-tuning: every parameter trains. Nothing to attach; make sure all weights require grad
(a model loaded from a checkpoint may arrive with some frozen)."""

from __future__ import annotations

from lmtune.config import Config


def prepare(model, cfg: Config):
    for p in model.parameters():
        p.requires_grad_(True)
    return model
