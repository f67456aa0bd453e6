"""A reference forward pass that reads a GGUF file and computes as llama.cpp's graphs do
(src/models/<arch>.cpp of llama.cpp), in float64 torch: written from llama.cpp's side, not from
the exporter's, so a wrong tensor name, layout or key shows up as different logits.

What it takes from the file, per architecture: RoPE as llama.cpp rotates it (NORM: adjacent pairs,
for llama/smollm3/granite; NEOX: the two halves, for the rest), rope_freqs (frequency / factor),
freq_base(_swa) and linear freq_scale, longrope's factors and attn_factor, partial rotary (rope.dimension_count), q/k norms (per
head, or over the whole projection for olmo2), biases, fused attn_qkv (phi3, gptneox) and fused
ffn_up (phi3: gate then up), Gemma's sqrt(n_embd) embedding scale, query scale and soft-caps,
sliding windows per layer, GPT-NeoX's parallel residual and LayerNorm, SmolLM3's NoPE layers,
Granite's four multipliers. GELU is the tanh form ggml uses.
"""

from __future__ import annotations

import math

import numpy as np
import torch

NORM_ROPE = ("llama", "smollm3", "granite")


class GGUFModel:
    def __init__(self, path):
        import gguf

        reader = gguf.GGUFReader(str(path))
        self.kv = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
        self.arch = self.kv["general.architecture"]
        self.t = {}
        for t in reader.tensors:
            data = gguf.quants.dequantize(t.data, t.tensor_type)
            shape = tuple(reversed(t.shape.tolist()))  # GGUF lists dimensions innermost first
            self.t[t.name] = torch.from_numpy(np.array(data, dtype=np.float64).reshape(shape))

    def key(self, name, default=None):
        return self.kv.get(f"{self.arch}.{name}", default)

    def w(self, name, layer=None):
        return self.t.get(name if layer is None else f"blk.{layer}.{name}")


def _rms(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def _layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * w + b


def _gelu_tanh(x):
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _linear(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


def _rope(x, n_rot, base, scale, factors, neox, mscale=1.0):
    """x: (tokens, heads, head_dim). llama.cpp's ggml_rope_ext: theta_i = pos * scale * base^(-2i/n_rot) / factor_i,
    cos and sin times mscale (the attn_factor)."""
    n = x.shape[0]
    i = torch.arange(n_rot // 2, dtype=torch.float64)
    inv = base ** (-2 * i / n_rot) / (factors if factors is not None else 1.0)
    theta = torch.arange(n, dtype=torch.float64)[:, None] * scale * inv[None, :]
    cos, sin = mscale * torch.cos(theta)[:, None, :], mscale * torch.sin(theta)[:, None, :]
    out = x.clone()
    if neox:
        a, b = x[..., : n_rot // 2], x[..., n_rot // 2: n_rot]
        out[..., : n_rot // 2], out[..., n_rot // 2: n_rot] = a * cos - b * sin, a * sin + b * cos
    else:
        a, b = x[..., 0:n_rot:2], x[..., 1:n_rot:2]
        out[..., 0:n_rot:2], out[..., 1:n_rot:2] = a * cos - b * sin, a * sin + b * cos
    return out


def _attention(q, k, v, scale, softcap, window):
    """q: (n, H, d); k, v: (n, Hkv, d). Causal, optionally a sliding window (pos - kv_pos < window)."""
    n, n_head = q.shape[0], q.shape[1]
    rep = n_head // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    s = torch.einsum("qhd,khd->hqk", q, k) * scale
    if softcap:
        s = torch.tanh(s / softcap) * softcap
    pos = torch.arange(n)
    allowed = pos[None, :] <= pos[:, None]
    if window:
        allowed &= (pos[:, None] - pos[None, :]) < window
    s = s.masked_fill(~allowed[None], float("-inf"))
    return torch.einsum("hqk,khd->qhd", torch.softmax(s, -1), v).reshape(n, -1)


def forward(m: GGUFModel, ids: list[int], n_ctx: int = 512) -> torch.Tensor:
    """Logits (tokens, vocab) as llama.cpp computes them from this file, in a context of n_ctx."""
    arch = m.arch
    n_embd, n_head = m.key("embedding_length"), m.key("attention.head_count")
    n_kv = m.key("attention.head_count_kv", n_head)
    head_dim = m.key("attention.key_length", n_embd // n_head)
    n_rot = m.key("rope.dimension_count", head_dim)
    eps = m.key("attention.layer_norm_rms_epsilon", m.key("attention.layer_norm_epsilon"))
    base = m.key("rope.freq_base", 10000.0)
    base_swa = m.key("rope.freq_base_swa", base if arch == "gemma2" else 10000.0)
    scale = 1.0 / m.key("rope.scaling.factor", 1.0) if m.key("rope.scaling.type") == "linear" else 1.0
    n_layer = m.key("block_count")
    window = m.key("attention.sliding_window", 0)
    pattern = m.key("attention.sliding_window_pattern")
    if pattern is None:  # llama.cpp's default periods: gemma2 every 2nd layer global, gemma3 every 6th
        period = {"gemma2": 2, "gemma3": 6}.get(arch)
        pattern = [bool(period) and il % period < period - 1 for il in range(n_layer)]
    if arch == "phi3":
        window = 0  # llama.cpp's phi3 turns SWA off
    neox = arch not in NORM_ROPE
    rope_factors = m.w("rope_freqs.weight")
    if m.w("rope_factors_short.weight") is not None:  # longrope: llama.cpp picks by context size
        long = n_ctx > m.key("rope.scaling.original_context_length", m.key("context_length"))
        rope_factors = m.w("rope_factors_long.weight" if long else "rope_factors_short.weight")
    mscale = m.key("rope.scaling.attn_factor", 1.0)
    gemma = arch in ("gemma2", "gemma3")
    kq_scale = m.key("attention.scale") or 1.0 / math.sqrt(head_dim)

    x = m.w("token_embd.weight")[torch.tensor(ids)]
    if gemma:
        x = x * math.sqrt(n_embd)
    if m.key("embedding_scale"):
        x = x * m.key("embedding_scale")
    for il in range(n_layer):
        swa = bool(window) and bool(pattern[il])
        norm = (lambda h, name: _layer_norm(h, m.w(name + ".weight", il), m.w(name + ".bias", il), eps)) \
            if arch == "gptneox" else (lambda h, name: _rms(h, m.w(name + ".weight", il), eps))
        h = x if arch == "olmo2" else norm(x, "attn_norm")
        if m.w("attn_qkv.weight", il) is not None:
            qkv = _linear(h, m.w("attn_qkv.weight", il), m.w("attn_qkv.bias", il))
            q, k, v = qkv.split([n_head * head_dim, n_kv * head_dim, n_kv * head_dim], dim=-1)
        else:
            q = _linear(h, m.w("attn_q.weight", il), m.w("attn_q.bias", il))
            k = _linear(h, m.w("attn_k.weight", il), m.w("attn_k.bias", il))
            v = _linear(h, m.w("attn_v.weight", il), m.w("attn_v.bias", il))
        if arch == "olmo2":  # q/k norm over the whole projection, before splitting into heads
            q, k = _rms(q, m.w("attn_q_norm.weight", il), eps), _rms(k, m.w("attn_k_norm.weight", il), eps)
        n = len(ids)
        q, k, v = q.reshape(n, n_head, head_dim), k.reshape(n, n_kv, head_dim), v.reshape(n, n_kv, head_dim)
        if arch != "olmo2" and m.w("attn_q_norm.weight", il) is not None:
            q, k = _rms(q, m.w("attn_q_norm.weight", il), eps), _rms(k, m.w("attn_k_norm.weight", il), eps)
        if not (arch == "smollm3" and (il + 1) % 4 == 0):
            layer_base, layer_scale = (base_swa, 1.0) if swa and gemma else (base, scale)
            q = _rope(q, n_rot, layer_base, layer_scale, rope_factors, neox, mscale)
            k = _rope(k, n_rot, layer_base, layer_scale, rope_factors, neox, mscale)
        if gemma:  # llama.cpp scales q by f_attention_scale = 1/sqrt(head_dim), then kq by 1
            q, this_scale = q / math.sqrt(head_dim), 1.0
        else:
            this_scale = kq_scale
        a = _attention(q, k, v, this_scale, m.key("attn_logit_softcapping") if arch == "gemma2" else None,
                       window if swa else 0)
        a = _linear(a, m.w("attn_output.weight", il), m.w("attn_output.bias", il))
        x = _block_rest(m, arch, il, x, h, a, norm)
    x = _layer_norm(x, m.w("output_norm.weight"), m.w("output_norm.bias"), eps) if arch == "gptneox" \
        else _rms(x, m.w("output_norm.weight"), eps)
    out = m.w("output.weight") if m.w("output.weight") is not None else m.w("token_embd.weight")
    logits = x @ out.T
    if m.key("logit_scale"):
        logits = logits / m.key("logit_scale")
    if m.key("final_logit_softcapping"):
        cap = m.key("final_logit_softcapping")
        logits = torch.tanh(logits / cap) * cap
    return logits


def _ffn(m, il, h, act):
    up = _linear(h, m.w("ffn_up.weight", il), m.w("ffn_up.bias", il))
    if m.w("ffn_gate.weight", il) is not None:
        gate = _linear(h, m.w("ffn_gate.weight", il))
        return _linear(act(gate) * up, m.w("ffn_down.weight", il), m.w("ffn_down.bias", il))
    if m.arch == "phi3":  # fused gate_up: the first half is the gate
        gate, up = up.chunk(2, dim=-1)
        return _linear(act(gate) * up, m.w("ffn_down.weight", il))
    return _linear(act(up), m.w("ffn_down.weight", il), m.w("ffn_down.bias", il))


def _block_rest(m, arch, il, x, h, attn, norm):
    """Residuals and feed-forward: each architecture's own arrangement."""
    silu = torch.nn.functional.silu
    eps = m.key("attention.layer_norm_rms_epsilon")
    if arch == "gptneox":  # parallel residual: x + attn(ln1 x) + mlp(ln2 x)
        return x + attn + _ffn(m, il, norm(x, "ffn_norm"), _gelu_tanh)
    if arch in ("gemma2", "gemma3"):
        x = x + _rms(attn, m.w("post_attention_norm.weight", il), eps)
        f = _ffn(m, il, _rms(x, m.w("ffn_norm.weight", il), eps), _gelu_tanh)
        return x + _rms(f, m.w("post_ffw_norm.weight", il), eps)
    if arch == "olmo2":
        x = x + _rms(attn, m.w("post_attention_norm.weight", il), eps)
        return x + _rms(_ffn(m, il, x, silu), m.w("post_ffw_norm.weight", il), eps)
    r = m.key("residual_scale") or 1.0
    x = x + attn * r
    return x + _ffn(m, il, _rms(x, m.w("ffn_norm.weight", il), eps), silu) * r
