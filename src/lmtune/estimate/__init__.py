"""Estimate a fine-tuning run before running it: exact parameter counts from the model's config
(meta device, no weights), a memory breakdown, which GPUs it fits on and with what micro-batch,
and time and cost from FLOPs. Pure arithmetic over the config: no peft, no Trainer, no weights.

    from lmtune.estimate import EstimateRequest, estimate
    est = estimate(EstimateRequest(model="llama-3.1-8b", method="qlora", gpu="4090"))
"""

from lmtune.estimate.core import Estimate, EstimateRequest, Fit, estimate, largest_batch
from lmtune.estimate.lora import LoraSpec, count_lora
from lmtune.estimate.memory import MemoryBreakdown, RunSpec, memory_breakdown
from lmtune.estimate.shapes import ModelShape, load_shape, preset_names, shape_from_config

__all__ = ["Estimate", "EstimateRequest", "Fit", "LoraSpec", "MemoryBreakdown", "ModelShape", "RunSpec",
           "count_lora", "estimate", "largest_batch", "load_shape", "memory_breakdown", "preset_names",
           "shape_from_config"]
