"""`estimate(request)`: parameters, memory, fit on each GPU, largest micro-batch, time and cost."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

from lmtune.errors import UserError
from lmtune.estimate.hardware import GIB, Device, cpu_device, custom_gpu, find_gpu, gpu_catalog, with_overrides
from lmtune.estimate.lora import LoraSpec
from lmtune.estimate.memory import OPTIMIZERS, MemoryBreakdown, RunSpec, memory_breakdown, resolve
from lmtune.estimate.shapes import ModelShape, load_shape
from lmtune.estimate.speed import Speed, speed

MAX_BATCH = 4096


@dataclass
class EstimateRequest:
    model: str = "tiny"
    method: str = "lora"
    seq_len: int = 512
    batch: int = 1
    grad_accum: int = 1
    grad_ckpt: bool = False
    lora_r: int = 16
    lora_targets: str | list[str] = "all-linear"
    lora_dropout: float = 0.05
    use_dora: bool = False
    optimizer: str = "auto"
    precision: str = "auto"
    weights_dtype: str = "auto"
    double_quant: bool = True
    loss: str = "fused"
    gpu: str | None = None               # catalog name, "cpu", or None (fit table over the catalog)
    gpu_mem: float | None = None         # GiB of a card not in the catalog
    num_gpus: int = 1
    fsdp: bool = False
    dataset_size: int | None = None      # training examples
    tokens_per_example: int | None = None   # mean tokens per example (default: seq_len)
    epochs: float = 3.0
    price_per_hour: float | None = None
    mfu: float | None = None
    objective: str = "sft"
    num_generations: int = 4             # grpo: answers sampled per prompt

    def check(self) -> None:
        problems = []
        if self.objective not in ("sft", "dpo", "orpo", "kto", "grpo"):
            problems.append(f"--objective: got {self.objective!r}, allowed: sft, dpo, orpo, kto, grpo")
        if self.num_generations < 2:
            problems.append(f"--num-generations: got {self.num_generations}, must be >= 2 (grpo compares answers)")
        if self.method not in ("full", "lora", "qlora"):
            problems.append(f"--method: got {self.method!r}, allowed: full, lora, qlora")
        for key in ("seq_len", "batch", "grad_accum", "lora_r", "num_gpus"):
            if getattr(self, key) < 1:
                problems.append(f"--{key.replace('_', '-')}: got {getattr(self, key)}, must be >= 1")
        if self.optimizer != "auto" and self.optimizer not in OPTIMIZERS:
            problems.append(f"--optimizer: got {self.optimizer!r}, allowed: auto, {', '.join(OPTIMIZERS)}")
        if self.loss not in ("fused", "plain"):
            problems.append(f"--loss: got {self.loss!r}, allowed: fused, plain")
        for key in ("dataset_size", "tokens_per_example"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                problems.append(f"--{key.replace('_', '-')}: got {getattr(self, key)}, must be >= 1")
        # (flag, value, lowest, lowest excluded, highest); NaN and inf are refused for every one
        for flag, value, lo, excl, hi in (("--epochs", self.epochs, 0, True, None),
                                          ("--lora-dropout", self.lora_dropout, 0, False, 0.9),
                                          ("--gpu-mem", self.gpu_mem, 0, True, None),
                                          ("--price-per-hour", self.price_per_hour, 0, False, None),
                                          ("--mfu", self.mfu, 0, True, 1)):
            if value is None:
                continue
            if not math.isfinite(value):
                problems.append(f"{flag}: got {value}, must be a finite number")
            elif value < lo or (excl and value == lo):
                problems.append(f"{flag}: got {value}, must be {'>' if excl else '>='} {lo}")
            elif hi is not None and value > hi:
                problems.append(f"{flag}: got {value}, must be <= {hi}")
        if problems:
            raise UserError("invalid estimate options", problems)

    def run_spec(self) -> RunSpec:
        lora = LoraSpec.from_targets(self.lora_targets, r=self.lora_r, dropout=self.lora_dropout,
                                     use_dora=self.use_dora)
        return RunSpec(self.method, self.seq_len, self.batch, self.grad_accum, self.grad_ckpt, lora,
                       self.optimizer, self.precision, self.weights_dtype, self.double_quant, self.loss,
                       self.num_gpus, self.fsdp, self.objective, self.num_generations)


@dataclass
class Fit:
    device: str
    memory_gib: float
    peak_gib: float
    fits: str                 # "yes" | "paged" (only with optimizer states paged out) | "no"
    max_batch: int            # largest micro-batch that fits at this seq_len (0: not even 1)
    fits_with_ckpt: bool      # fits at batch 1 once gradient checkpointing is on
    hours: float | None
    cost: float | None


@dataclass
class Estimate:
    request: dict
    model: dict
    optimizer: str
    memory: MemoryBreakdown
    device: str
    fits: list[Fit] = field(default_factory=list)
    speed: Speed | None = None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["memory_gib"] = self.memory.as_gib()
        return out


def device_for(req: EstimateRequest) -> Device | None:
    if req.gpu_mem is not None:
        dev = custom_gpu(req.gpu_mem, name=req.gpu)
    elif req.gpu is None:
        return None
    elif req.gpu.lower() == "cpu":
        dev = cpu_device()
    else:
        dev = find_gpu(req.gpu)
    return with_overrides(dev, req.price_per_hour, req.mfu)


def fit_status(mem: MemoryBreakdown, dev: Device) -> str:
    if mem.peak <= dev.memory_bytes:
        return "yes"
    if mem.paged and mem.peak - mem.optimizer <= dev.memory_bytes:
        return "paged"
    return "no"


def largest_batch(shape: ModelShape, spec: RunSpec, dev: Device) -> int:
    """Largest micro-batch whose peak fits on `dev` (memory grows with the batch: doubling + bisection)."""
    def ok(b: int) -> bool:
        return fit_status(memory_breakdown(shape, spec, dev.kind, b), dev) == "yes"
    if not ok(1):
        return 0
    lo, hi = 1, 2
    while hi <= MAX_BATCH and ok(hi):
        lo, hi = hi, hi * 2
    hi = min(hi, MAX_BATCH + 1)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def _train_tokens(req: EstimateRequest) -> int | None:
    if not req.dataset_size:
        return None
    return int(req.dataset_size * (req.tokens_per_example or req.seq_len) * req.epochs)


def fit_on(shape: ModelShape, spec: RunSpec, dev: Device, req: EstimateRequest, lora_params: int) -> Fit:
    mem = memory_breakdown(shape, spec, dev.kind)
    ckpt = spec.grad_ckpt or fit_status(memory_breakdown(shape, replace(spec, grad_ckpt=True), dev.kind, 1),
                                        dev) == "yes"
    sp = speed(shape, dev, spec.method, spec.seq_len, spec.grad_ckpt, lora_params, spec.num_gpus,
               spec.seq_len * spec.batch * spec.grad_accum * spec.num_gpus, _train_tokens(req))
    return Fit(dev.name, round(dev.memory_gib, 2), round(mem.peak / GIB, 2), fit_status(mem, dev),
               largest_batch(shape, spec, dev), ckpt, sp.hours, sp.cost)


def estimate(req: EstimateRequest) -> Estimate:
    req.check()
    shape = load_shape(req.model)
    spec = req.run_spec()
    dev = device_for(req)
    kind = dev.kind if dev else "cuda"
    res = resolve(shape, spec, kind)
    mem = memory_breakdown(shape, spec, kind)
    model = {"source": shape.source, "model_type": shape.model_type, "total_params": shape.total_params,
             "trainable_params": res.trainable,
             "trainable_pct": round(100 * res.trainable / shape.total_params, 4),
             "layers": shape.num_layers, "hidden": shape.hidden, "vocab": shape.vocab}
    devices = [dev] if dev else [with_overrides(d, req.price_per_hour, req.mfu) for d in gpu_catalog()]
    fits = [fit_on(shape, spec, d, req, res.lora_params) for d in devices]
    sp = None
    if dev:
        sp = speed(shape, dev, spec.method, spec.seq_len, spec.grad_ckpt, res.lora_params, spec.num_gpus,
                   spec.seq_len * spec.batch * spec.grad_accum * spec.num_gpus, _train_tokens(req))
    return Estimate(asdict(req), model, res.optimizer, mem, dev.name if dev else "any CUDA GPU (bf16)",
                    fits, sp)
