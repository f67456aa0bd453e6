"""Checks that QLoRA can run here, before any weights are loaded (cheap: no model import)."""

from __future__ import annotations

import importlib.util

from lmtune.errors import UserError


def check_qlora_supported() -> None:
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError("method qlora needs bitsandbytes, which is not installed",
                        ["pip install bitsandbytes==0.50.2 (it has CPU and CUDA backends), or use method: lora"])
    import torch

    if torch.cuda.is_available():
        major, _ = torch.cuda.get_device_capability(0)
        if major < 5:
            raise UserError(f"method qlora: GPU compute capability {major}.x is too old for bitsandbytes 4-bit",
                            ["use method: lora, or a GPU with compute capability >= 5.0"])
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        raise UserError("method qlora: bitsandbytes 4-bit is not supported on Apple MPS",
                        ["use method: lora on this machine"])
