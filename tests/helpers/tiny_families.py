"""Tiny random models of each family lmtune exports to GGUF, built from transformers configs at
test time (no downloads) and saved like a Hub model: 2 layers (4 for SmolLM3, whose NoPE layer is
the 4th), hidden 64, every row a multiple of 32 so q8_0/q4_0 blocks accept them. Each config turns
on what makes its family different (llama3 RoPE scaling, qkv bias, q/k norms, soft-capping, a
sliding window shorter than the test prompts, fused qkv/gate_up with longrope and partial rotary, parallel residual, NoPE layers,
Granite's multipliers), so a writer that ignores it gets different logits."""

from __future__ import annotations

from pathlib import Path

FAMILIES = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3", "gpt_neox", "olmo2",
            "smollm3", "granite")

_COMMON = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False)


def family_config(family: str, vocab_size: int, eos: int, pad: int):
    import transformers as tf

    ids = dict(vocab_size=vocab_size, bos_token_id=eos, eos_token_id=eos, pad_token_id=pad)
    c = dict(_COMMON, **ids)
    if family == "llama":  # Llama 3.1/3.2: llama3 RoPE scaling; head_dim 16's frequencies fall in all three bands
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
        return tf.LlamaConfig(**{**c, "max_position_embeddings": 131072}, rope_parameters=rope)
    if family == "mistral":  # Mistral 7B v0.1's window (longer than any test prompt, as llama.cpp assumes)
        return tf.MistralConfig(**c, sliding_window=4096)
    if family == "qwen2":
        return tf.Qwen2Config(**c)  # q/k/v carry biases
    if family == "qwen3":
        return tf.Qwen3Config(**{**c, "tie_word_embeddings": True}, head_dim=16)
    if family == "gemma2":  # window 4 < prompt length: the sliding layer really differs
        return tf.Gemma2Config(**{**c, "tie_word_embeddings": True}, head_dim=16, query_pre_attn_scalar=16,
                               sliding_window=4, attn_logit_softcapping=5.0, final_logit_softcapping=3.0)
    if family == "gemma3_text":  # one sliding layer, one global with linear RoPE scaling
        return tf.Gemma3TextConfig(**{**c, "tie_word_embeddings": True}, head_dim=16, query_pre_attn_scalar=16,
                                   sliding_window=4, layer_types=["sliding_attention", "full_attention"],
                                   rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0,
                                                                       "rope_theta": 1000000.0},
                                                    "sliding_attention": {"rope_type": "default",
                                                                          "rope_theta": 50000.0}})
    if family == "phi3":
        # Phi-4-mini's shape of RoPE: longrope with partial rotary (12 of 16 dims, so 6 factors each)
        rope = {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                "original_max_position_embeddings": 512, "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5],
                "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]}
        return tf.Phi3Config(**{**c, "max_position_embeddings": 2048}, original_max_position_embeddings=512,
                             rope_parameters=rope)
    if family == "gpt_neox":
        return tf.GPTNeoXConfig(**ids, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, max_position_embeddings=512, hidden_act="gelu",
                                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                 "partial_rotary_factor": 0.5})
    if family == "olmo2":
        return tf.Olmo2Config(**c)
    if family == "smollm3":  # layer 4 is NoPE, as in SmolLM3-3B (every 4th layer)
        return tf.SmolLM3Config(**{**c, "num_hidden_layers": 4, "tie_word_embeddings": True})
    if family == "granite":
        return tf.GraniteConfig(**c, embedding_multiplier=12.0, attention_multiplier=0.25,
                                residual_multiplier=0.22, logits_scaling=8.0)
    raise ValueError(f"unknown family {family}")


def save_family_model(path: Path, family: str, seed: int = 0) -> Path:
    """A random tiny `family` model + the byte-level tokenizer of tiny_models, saved under `path`.
    Norm weights are randomised too (they start at 0 or 1), so a missed +1 or a norm on the wrong
    tensor changes the logits."""
    import torch
    from transformers import AutoModelForCausalLM

    from tiny_models import build_tokenizer

    tok = build_tokenizer()
    cfg = family_config(family, len(tok), tok.eos_token_id, tok.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.2)
            else:
                p.normal_(0.0, 0.15)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    return path
