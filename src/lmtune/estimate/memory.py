"""Memory of one training process, by component, for a given micro-batch.

    peak = weights + optimizer states + max(backward peak, gradients + optimizer step temporaries)
           + framework overhead
    backward peak = activations (all layers, or checkpoints + one recomputed layer) + loss buffers
                    + gradients already present (all of them from the 2nd accumulation micro-batch on)

The dtype policy mirrors lmtune.models.load_model and the methods: full fine-tuning keeps fp32 master
weights (bf16 autocast on GPU); LoRA freezes a 16-bit base on GPU (fp32 on CPU) with fp32 adapters
(peft's autocast_adapter_dtype); QLoRA stores Linear weights in 4-bit and keeps every other parameter
(embeddings, norms, lm_head) and so the residual stream in the dtype it loaded, bf16 on a bf16 GPU
(lmtune/train/methods/qlora.py), fp32 for an fp16 base (peft's prepare_model_for_kbit_training) and on CPU;
TRL's SFTTrainer casts QLoRA adapters to bf16.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lmtune.estimate.activations import Numerics, Trainability, profile
from lmtune.estimate.lora import LoraSpec, count_lora
from lmtune.estimate.shapes import ModelShape

GIB = 1024 ** 3
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
# 4-bit NF4/FP4 (bitsandbytes, Dettmers et al. 2023 "QLoRA" sec. 3): 4 bits per weight plus one fp32
# absmax per block of 64 (0.5 bit/param); double quantization stores those absmax as 8-bit with one
# fp32 constant per 256 of them: 8/64 + 32/(64*256) = 0.127 bit/param.
NF4_BITS = 4.0
QUANT_CONST_BITS = {False: 32 / 64, True: 8 / 64 + 32 / (64 * 256)}
CUDA_CONTEXT = int(0.6 * GIB)      # CUDA context + cuBLAS workspaces: assumed, outside torch's allocator
CUDA_FRAGMENTATION = 0.05          # caching-allocator slack on top of the tensor peak: assumed
CPU_BASELINE = int(0.47 * GIB)     # RSS of python + torch + transformers + peft + bitsandbytes + trl, measured here
# glibc keeps freed medium-sized chunks (below its 32 MB mmap threshold) in its arenas, so peak RSS
# exceeds the peak of live tensors: by 0-54% of the step's live tensors (0-0.7 GiB) in
# benchmarks/estimate_memory.py on this machine, more with LoRA's many small tensors; 20% keeps
# every measured case within 15%.
CPU_ALLOCATOR_SLACK = 0.20
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit",
              "sgd", "adafactor")


@dataclass(frozen=True)
class RunSpec:
    """What is trained and how (everything but the hardware count and the dataset)."""
    method: str = "lora"                 # full | lora | qlora
    seq_len: int = 512
    batch: int = 1                       # micro-batch per device (packed rows of seq_len tokens)
    grad_accum: int = 1
    grad_ckpt: bool = False
    lora: LoraSpec = LoraSpec()
    optimizer: str = "auto"
    precision: str = "auto"              # train.precision: auto | bf16 | fp16 | fp32
    weights_dtype: str = "auto"          # model.dtype: auto | fp32 | bf16 | fp16
    double_quant: bool = True
    loss: str = "fused"                  # fused (TRL's chunked LM head, what lmtune train runs) | plain
    num_gpus: int = 1
    fsdp: bool = False
    objective: str = "sft"               # train.objective: sft | dpo | orpo | kto | grpo
    num_generations: int = 4             # grpo: rl.num_generations (answers sampled per prompt)


@dataclass
class MemoryBreakdown:
    weights: int
    quant_constants: int
    adapters: int
    gradients: int
    optimizer: int
    activations: int
    loss_buffers: int
    optimizer_step_temp: int
    overhead: int
    peak: int
    paged: bool = False                  # optimizer states are paged (may spill to CPU RAM)
    reference: int = 0                   # full dpo/kto/grpo: the frozen copy of the starting weights
    generation: int = 0                  # grpo: KV cache and logits of sampling the generation batch
    notes: list[str] = field(default_factory=list)

    def as_gib(self) -> dict:
        keys = ("weights", "quant_constants", "adapters", "gradients", "optimizer", "activations",
                "loss_buffers", "optimizer_step_temp", "overhead", "peak")
        out = {k: round(getattr(self, k) / GIB, 3) for k in keys}
        if self.reference:   # only for full dpo/kto/grpo, so SFT's JSON is unchanged
            out["reference"] = round(self.reference / GIB, 3)
        if self.generation:   # only for grpo
            out["generation"] = round(self.generation / GIB, 3)
        return out


@dataclass(frozen=True)
class Resolved:
    numerics: Numerics
    weight_bytes: int          # bytes per non-quantized base parameter
    optimizer: str
    trainable: int
    trainable_tensors: tuple
    adapted: frozenset
    lora_params: int


def resolve(shape: ModelShape, spec: RunSpec, device_kind: str) -> Resolved:
    """Dtypes, optimizer and trainable set that lmtune train would use for this run on this device."""
    precision = spec.precision if spec.precision != "auto" else ("bf16" if device_kind == "cuda" else "fp32")
    p = DTYPE_BYTES[precision]
    if spec.weights_dtype != "auto":
        wb = DTYPE_BYTES[spec.weights_dtype]
    elif spec.method == "lora" and device_kind == "cuda":
        wb = p                              # frozen base in 16-bit (lmtune.models.load_model)
    elif spec.method == "qlora" and precision == "bf16":
        wb = 2                              # non-4-bit parts stay bf16 (lmtune/train/methods/qlora.py)
    else:
        wb = 4                              # fp32 master weights; QLoRA's non-4-bit parts on CPU
    if spec.method == "qlora" and spec.weights_dtype == "fp16":
        wb = 4                              # an fp16 base goes through peft's fp32 upcast
    autocast = p == 2
    resid = wb                              # the residual stream has the embeddings' dtype
    adapter = 2 if spec.method == "qlora" else 4
    num = Numerics(device_kind, p if autocast else (resid if spec.method != "full" else wb), autocast,
                   resid, adapter, quantized=spec.method == "qlora")
    opt = spec.optimizer
    if opt == "auto":
        opt = "paged_adamw_8bit" if (spec.method == "qlora" and device_kind == "cuda") else "adamw_torch"
    if spec.method == "full":
        tensors = tuple(s for _, s in shape.param_shapes)
        return Resolved(num, wb, opt, shape.total_params, tensors, frozenset(), 0)
    lc = count_lora(shape, spec.lora)
    adapted = frozenset(lin.name.rsplit(".", 1)[-1] for lin in lc.adapted if lin.layer is not None)
    return Resolved(num, wb, opt, lc.trainable, tuple(lc.tensors), adapted, lc.trainable)


def _numel(shape) -> int:
    return math.prod(shape)


def optimizer_bytes(opt: str, tensors, param_bytes: int) -> tuple[int, int]:
    """(persistent state bytes, step temporaries) for `opt` over trainable tensors of `param_bytes`."""
    state, biggest, total = 0, 0, 0
    for s in tensors:
        n = _numel(s)
        total += n
        biggest = max(biggest, n)
        if opt in ("adamw_torch", "adamw_torch_fused"):
            state += 2 * n * param_bytes             # exp_avg, exp_avg_sq in the parameter dtype
        elif opt in ("adamw_8bit", "paged_adamw_8bit"):
            # bitsandbytes: 8-bit states + fp32 absmax per 256-block; tensors < 4,096 elements stay 32-bit
            state += 8 * n if n < 4096 else 2 * n + 2 * 4 * math.ceil(n / 256)
        elif opt == "paged_adamw_32bit":
            state += 8 * n
        elif opt == "adafactor":
            # factored second moment: one fp32 row and one column vector per matrix
            state += 4 * (s[0] + _numel(s[1:])) if len(s) >= 2 else 4 * n
    temp = 0
    if opt == "adamw_torch":
        temp = total * param_bytes                    # foreach sqrt(exp_avg_sq) copy (CUDA default)
    return state, temp


def weight_bytes(shape: ModelShape, spec: RunSpec, r: Resolved) -> tuple[int, int, int]:
    """(base weights, quantization constants, adapters) in bytes."""
    adapters = r.lora_params * r.numerics.adapter
    if spec.method != "qlora":
        return shape.total_params * r.weight_bytes, 0, adapters
    quantized = sum(l.weight_params for l in shape.linears if not l.is_head and not l.conv1d)
    base = int(quantized * NF4_BITS / 8) + (shape.total_params - quantized) * r.weight_bytes
    consts = int(quantized * QUANT_CONST_BITS[spec.double_quant] / 8)
    return base, consts, adapters


def _loss_buffers(shape: ModelShape, r: Resolved, tokens: int, spec: RunSpec) -> int:
    """Transient bytes of the loss at the start of backward."""
    n, h, v = r.numerics, shape.hidden, shape.vocab
    pc = n.compute if n.autocast else n.resid
    if spec.loss == "plain":
        # transformers' loss: logits upcast to fp32, log_softmax output kept (counted with the
        # activations), then at the start of backward its gradient and the logits' gradient, both
        # (tokens x vocab) fp32: 12 bytes per logit at the peak, 8 of them transient
        return 8 * v * tokens
    # TRL's chunked LM head (trl/kernels/chunked_logprob.py): a (<=4,096 tokens x 32,768) buffer in the
    # compute dtype, allocated at full chunk width even for smaller vocabularies; on CPU the torch fallback
    # keeps ~7.25 fp32 tiles of (<=4,096 x min(vocab, 32,768)) live in backward (measured here with
    # mallinfo2 sampling; the Triton kernel on CUDA needs none); fp32 accumulators for the gradients of
    # the hidden states and, when lm_head trains, of its weight; a 16-bit copy of each weight chunk
    # when lm_head is stored in fp32 under autocast.
    rows = min(tokens, 4096)
    buf = rows * 32768 * pc
    if n.device == "cpu":
        buf += int(7.25 * 4 * rows * min(v, 32768))
    buf += tokens * h * (4 + n.resid)
    if spec.method == "full":
        buf += v * h * 4
    if n.autocast and r.weight_bytes != pc:     # lm_head stored wider than the compute dtype
        buf += min(v, 32768) * h * pc
    return buf


def activation_profile(shape: ModelShape, spec: RunSpec, r: Resolved):
    """Per-token/per-layer activation bytes of this run (see activations.py)."""
    in_layers = sum(_numel(t) for t in r.trainable_tensors) if spec.method != "full" else 0
    t = Trainability(spec.method == "full", r.adapted, spec.lora.r if spec.method != "full" else 0,
                     spec.lora.dropout, in_layers // max(1, shape.num_layers))
    return profile(shape, r.numerics, t, spec.seq_len)


def memory_breakdown(shape: ModelShape, spec: RunSpec, device_kind: str, batch: int | None = None
                     ) -> MemoryBreakdown:
    r = resolve(shape, spec, device_kind)
    b = batch or spec.batch
    # dpo and orpo run each pair's chosen and rejected answers as two rows of one batch
    tokens = b * spec.seq_len * (2 if spec.objective in ("dpo", "orpo") else 1)
    weights, consts, adapters = weight_bytes(shape, spec, r)
    grad_bytes = 4 if spec.method == "full" and r.weight_bytes == 4 else (
        r.weight_bytes if spec.method == "full" else r.numerics.adapter)
    grads = r.trainable * grad_bytes
    opt, opt_temp = optimizer_bytes(r.optimizer, r.trainable_tensors, grad_bytes)
    if device_kind == "cpu" and r.optimizer == "adamw_torch":
        # no foreach on CPU: per tensor, sqrt(exp_avg_sq) and its division allocate two temporaries
        opt_temp = 2 * max((_numel(s) for s in r.trainable_tensors), default=0) * grad_bytes
    shard = spec.num_gpus if (spec.fsdp and spec.num_gpus > 1) else 1
    weights, grads, opt, opt_temp = weights // shard, grads // shard, opt // shard, opt_temp // shard

    prof = activation_profile(shape, spec, r)
    one_layer = prof.per_token_layer * tokens + prof.static_layer
    if spec.grad_ckpt:
        acts = shape.num_layers * prof.ckpt_token_layer * tokens + one_layer
    else:
        acts = shape.num_layers * one_layer
    acts += prof.head_token * tokens
    if spec.loss == "plain":
        acts += 4 * shape.vocab * tokens               # log_softmax output kept for backward
    loss_buf = _loss_buffers(shape, r, tokens, spec)
    if spec.fsdp and shape.num_layers:
        acts += 2 * shape.layer_params() * r.weight_bytes   # two gathered layers (prefetch)
    head_grads = grads if spec.grad_accum > 1 else (shape.vocab * shape.hidden * grad_bytes // shard
                                                    if spec.method == "full" else 0)
    backward = acts + loss_buf + head_grads
    # full dpo/kto/grpo keep a frozen copy of the start as the reference (LoRA: the adapter switched off)
    reference = weights if spec.method == "full" and spec.objective in ("dpo", "kto", "grpo") else 0
    generation = generation_bytes(shape, spec, r, b) if spec.objective == "grpo" else 0
    # sampling runs between backward passes: its cache and the activations are never held together
    tensors = weights + consts + adapters + reference + opt + max(backward, grads + opt_temp, generation)
    if device_kind == "cuda":
        overhead = CUDA_CONTEXT + int(CUDA_FRAGMENTATION * tensors)
    else:
        overhead = CPU_BASELINE + int(CPU_ALLOCATOR_SLACK * (tensors - weights - consts))
    notes = []
    if not prof.exact:
        notes.append(f"activations of {shape.model_type} use Korthikanti et al.'s GPT formula (approximate)")
    if spec.objective in ("dpo", "orpo"):
        notes.append(f"{spec.objective}: a micro-batch of {b} pair{'s' if b > 1 else ''} runs as {2 * b} rows "
                     f"(chosen and rejected)")
    if spec.objective == "grpo":
        n = b * spec.grad_accum
        notes.append(f"grpo: a micro-batch of {b} rows holds {b // max(1, spec.num_generations) or 1} prompt(s) x "
                     f"{spec.num_generations} sampled answers; the {n} answers of an optimizer step are sampled at "
                     f"once with a KV cache of {spec.seq_len} tokens each"
                     + (" (full: plus a frozen reference, rl.beta > 0)" if spec.method == "full" else "")
                     + "; the time counts the training passes, not sampling")
    return MemoryBreakdown(int(weights), int(consts), int(adapters), int(grads), int(opt), int(acts),
                           int(loss_buf), int(opt_temp), int(overhead), int(tensors + overhead),
                           paged=r.optimizer.startswith("paged"), notes=notes, reference=int(reference),
                           generation=int(generation))


def generation_bytes(shape: ModelShape, spec: RunSpec, r: Resolved, batch: int) -> int:
    """GRPO samples a whole generation batch (micro-batch x grad_accum sequences, TRL's default) at
    once: the KV cache of every layer at the full length, and one step's full-vocabulary logits
    in fp32 (the sampler's softmax)."""
    sequences = batch * spec.grad_accum
    kv = 2 * shape.num_layers * shape.kv_heads * shape.head_dim * r.numerics.compute * sequences * spec.seq_len
    return kv + 4 * shape.vocab * sequences
