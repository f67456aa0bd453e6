"""Activation memory: what autograd keeps for the backward pass, per token and per layer.

Method: count the tensors each op saves for backward, as Korthikanti et al. 2022 ("Reducing
Activation Recomputation in Large Transformer Models", sec. 4.1) do for GPT, whose per-layer total
is s*b*h*(34 + 5*a*s/h) bytes in 16-bit. That formula assumes GPT (LayerNorm, 4h GeLU MLP,
dropout everywhere, attention scores materialized). The models people fine-tune today differ: RMSNorm
(transformers upcasts its input to fp32), gated MLPs (SwiGLU), grouped-query attention, no dropout,
and SDPA/flash kernels that keep no s x s scores. So for that family (Llama, Mistral, Qwen2, Phi-3,
Gemma-2) the rules below count the saved tensors of the transformers 5 implementation, and for LoRA
those of peft 0.21 (dropout per adapted module, input cast to the adapter dtype). They were checked
tensor by tensor with torch.autograd.graph.saved_tensors_hooks (tests/estimate/test_estimate_activations.py
repeats that check). Other architectures use Korthikanti's formula, scaled to the activation dtype.

Rules worth knowing (all measured):
- autocast copies an activation again for every op that reads it (it caches only leaf weights), so a
  fp32 residual stream read by q, k and v costs three bf16 copies;
- a frozen Linear keeps no input (PyTorch saves only what the needed gradients use);
- LoRA dropout keeps a mask and its output per adapted module (CPU masks have the input's dtype,
  CUDA masks one byte);
- under autocast, fp32 weights that train are cast once per step and the copies stay saved.
"""

from __future__ import annotations

from dataclasses import dataclass

from lmtune.estimate.shapes import ModelShape

# transformers' tanh-approximation GELU as separate ops (GPT-2, Phi): 0.5*x*(1+tanh(c*(x+0.044715*x^3)))
DECOMPOSED_GELU = ("gelu_new",)
ATTN_IN = ("q_proj", "k_proj", "v_proj", "qkv_proj")
MLP_IN = ("gate_proj", "up_proj", "gate_up_proj")


@dataclass(frozen=True)
class Numerics:
    """Bytes per element of each kind of tensor in a run."""
    device: str        # "cuda" | "cpu"
    compute: int       # matmul outputs: 2 under bf16/fp16 autocast, else the weights' bytes
    autocast: bool
    resid: int         # residual stream = dtype of the embedding weights
    adapter: int = 4   # LoRA weights (peft upcasts to fp32; TRL casts QLoRA adapters to bf16)
    quantized: bool = False   # bitsandbytes Linear4bit casts its output back to its input's dtype

    @property
    def base_out(self) -> int:
        """Bytes of a base Linear's output: autocast's dtype, except 4-bit layers (input dtype)."""
        return self.resid if (self.quantized or not self.autocast) else self.compute

    def mask_bytes(self, dropped_dtype: int) -> int:
        # CUDA's fused dropout keeps a bool mask; the CPU kernel multiplies by a noise tensor of the input dtype
        return 1 if self.device == "cuda" else dropped_dtype


@dataclass(frozen=True)
class Trainability:
    full: bool                         # every weight trains
    adapted: frozenset[str] = frozenset()   # leaf names of LoRA-adapted modules in a layer
    r: int = 0
    lora_dropout: float = 0.0
    adapter_params_per_layer: int = 0


@dataclass
class ActivationProfile:
    per_token_layer: float      # bytes per token per decoder layer kept for backward (no checkpointing)
    static_layer: float         # bytes per layer independent of tokens (autocast weight copies)
    ckpt_token_layer: float     # bytes per token per layer kept with gradient checkpointing (layer input)
    head_token: float           # bytes per token kept by the final norm and the loss
    exact: bool                 # True for the counted family, False for Korthikanti's approximation


def _input_cost(width: int, src: int, consumers: list[tuple[bool, bool]], n: Numerics, t: Trainability,
                already_saved: bool = False) -> float:
    """Bytes/token kept for one activation read by several Linears: (base trains, LoRA-adapted) each."""
    p, per, shared = n.compute, 0.0, already_saved
    need_shared = False
    for base, lora in consumers:
        if base:
            if n.autocast and src != p:
                per += p * width               # autocast casts per op: one copy per reader
            else:
                need_shared = True
        if lora:
            cast = src != n.adapter            # peft casts x to the adapter dtype first
            a_in = p if n.autocast else n.adapter
            if t.lora_dropout > 0:
                per += n.mask_bytes(n.adapter) * width + a_in * width
            elif n.autocast and n.adapter != p:
                per += p * width
            elif cast:
                per += n.adapter * width
            else:
                need_shared = True
    if need_shared and not shared:
        per += src * width
    return per


def _norm(h: int, src: int, full: bool) -> float:
    # RMSNorm: fp32 upcast of the input (4h) + rsqrt (4); the normalized tensor only if the weight trains
    return 4 * h + 4 + (src * h if full else 0)


def llama_profile(s: ModelShape, n: Numerics, t: Trainability, seq_len: int) -> ActivationProfile:
    h, i, qw, kvw = s.hidden, s.intermediate, s.q_width, s.kv_width
    p, rb = n.compute, n.resid
    lin_out = n.base_out
    attn_b = p if n.autocast else lin_out             # SDPA runs (and saves) in autocast's dtype
    ad = t.adapted
    total = 2 * _norm(h, rb, t.full) + (s.norms_per_layer - 2) * _norm(h, lin_out, t.full)
    # attention: q, k, v read the normed input (fused qkv_proj: one reader)
    readers = [m for m in ATTN_IN if (m == "qkv_proj") == s.fused_qkv]
    total += _input_cost(h, rb, [(t.full, m in ad) for m in readers], n, t)
    q_b = p if n.autocast else max(lin_out, rb)       # RoPE multiplies by cos/sin in the residual dtype
    if s.attn_impl == "eager":
        # scores: softmax in fp32, cast back, probabilities @ v; k and v repeated to all heads
        total += q_b * qw + 2 * attn_b * qw + (4 + attn_b) * s.heads * seq_len
        if s.attention_dropout > 0:
            total += (n.mask_bytes(attn_b) + attn_b) * s.heads * seq_len
    else:
        # SDPA/flash: q, k, v, output and the fp32 log-sum-exp; no s x s scores
        total += q_b * qw + (q_b + attn_b) * kvw + 4 * s.heads
    total += attn_b * qw                                            # attention output (o_proj input)
    total += _input_cost(qw, attn_b, [(t.full, "o_proj" in ad)], n, t, already_saved=True)
    # gated MLP: gate output (activation input), activation output and up output (the product's inputs)
    fused_mlp = any(x.name.endswith(".gate_up_proj") for x in s.linears)
    mlp_readers = [m for m in MLP_IN if (m == "gate_up_proj") == fused_mlp]
    total += _input_cost(h, rb, [(t.full, m in ad) for m in mlp_readers], n, t)
    total += 3 * lin_out * i
    total += _input_cost(i, lin_out, [(t.full, "down_proj" in ad)], n, t)
    total += len(ad) * t.r * (p if n.autocast else n.adapter)    # lora_A outputs kept by lora_B
    static = 0.0
    if n.autocast:
        if t.full and rb != p:
            static += p * _layer_linear_params(s)     # bf16 copies of fp32 master weights
        if t.adapted and n.adapter != p:
            static += p * t.adapter_params_per_layer
    return ActivationProfile(total, static, rb * h, _head_token(s, n, t), exact=True)


def _layer_linear_params(s: ModelShape) -> int:
    inside = sum(lin.weight_params for lin in s.linears if lin.layer is not None)
    return inside // max(1, s.num_layers)


def _head_token(s: ModelShape, n: Numerics, t: Trainability) -> float:
    # final norm + the copy of the hidden states the loss keeps + per-token fp32 statistics and labels
    return _norm(s.hidden, n.resid, t.full) + n.resid * s.hidden + 32


def generic_profile(s: ModelShape, n: Numerics, t: Trainability, seq_len: int) -> ActivationProfile:
    """Korthikanti et al. 2022, eq. (1): per layer s*b*h*(34 + 5*a*s/h) bytes at 16-bit, i.e. per token
    11h (attention) + 19h (4h MLP) + 4h (LayerNorms) + 5*a*s (scores, softmax, dropout). Scaled to the
    activation dtype, the MLP to the real intermediate size, and the score term dropped for SDPA/flash."""
    h, i, p = s.hidden, s.intermediate, (n.compute if n.autocast else n.resid)
    mask = n.mask_bytes(p) if s.hidden_dropout > 0 else 0
    per = 5 * p * h + mask * h          # attention: qkv input, q, k, v, projection input, dropout mask
    per += p * h + 2 * p * i + mask * h  # MLP: fc1 input, activation input, fc2 input, dropout mask
    if s.extra.get("hidden_act") in DECOMPOSED_GELU:
        per += 3 * p * i                 # written out in Python ops: x^3, tanh and 0.5*x are kept too
    per += s.norms_per_layer * (p * h + 8)   # LayerNorm inputs and their fp32 mean and rstd
    if s.attn_impl == "eager" or s.attention_dropout > 0:
        per += (2 * p + n.mask_bytes(p)) * s.heads * seq_len   # softmax output, dropout output and mask
    a_in = p if n.autocast else n.adapter
    # per adapted module of a layer (GPT-2 has two c_proj, one reading the MLP's wider activation):
    # lora_A's output, and with dropout its mask (the dropped copy takes the place of the module
    # input counted above, which the frozen base no longer keeps)
    widths = [lin.in_features for lin in s.linears if lin.layer == 0 and lin.name.rsplit(".", 1)[-1] in t.adapted]
    per += sum(n.mask_bytes(n.adapter) * w * (t.lora_dropout > 0) + t.r * a_in for w in widths)
    return ActivationProfile(per, 0.0, n.resid * h, _head_token(s, n, t), exact=False)


def profile(s: ModelShape, n: Numerics, t: Trainability, seq_len: int) -> ActivationProfile:
    if s.family == "llama":
        return llama_profile(s, n, t, seq_len)
    return generic_profile(s, n, t, seq_len)
