"""`lmtune estimate --objective grpo`: sampling's KV cache (one cache per answer of an optimizer
step, at the full length), the frozen reference of full fine-tuning, and the option's errors."""

from __future__ import annotations

import pytest

from lmtune.errors import UserError
from lmtune.estimate import EstimateRequest, RunSpec, estimate, load_shape, memory_breakdown


def _mem(**kw):
    return memory_breakdown(load_shape("qwen2.5-0.5b"), RunSpec(**{"objective": "grpo", "batch": 4, **kw}), "cuda")


def test_grpo_sampling_cache_scales_with_the_answers_sampled_at_once_and_their_length():
    shape = load_shape("qwen2.5-0.5b")
    one = _mem(grad_accum=1, seq_len=256).generation
    # K and V per layer per token, compute dtype (bf16 on CUDA), for 4 answers; plus one step's logits
    kv = 2 * shape.num_layers * shape.kv_heads * shape.head_dim * 2 * 4 * 256
    assert one == kv + 4 * shape.vocab * 4
    assert _mem(grad_accum=4, seq_len=256).generation == 4 * one
    assert _mem(grad_accum=1, seq_len=512).generation == one + kv   # the cache doubles, the logits do not
    sft = memory_breakdown(shape, RunSpec(batch=4, seq_len=256), "cuda")
    assert sft.generation == 0 and "generation" not in sft.as_gib()


def test_full_grpo_holds_a_reference_copy_and_lora_does_not():
    assert _mem(method="full").reference == _mem(method="full").weights
    assert _mem(method="lora").reference == 0


def test_generation_can_set_the_peak():
    # a long sampled length with a short backward: the cache, not the activations, is the largest term
    low = _mem(grad_accum=1, seq_len=2048)
    high = _mem(grad_accum=64, seq_len=2048)
    assert high.generation > low.generation and high.peak > low.peak


def test_num_generations_below_two_is_refused():
    with pytest.raises(UserError) as err:
        estimate(EstimateRequest(model="tiny", objective="grpo", num_generations=1, gpu="cpu"))
    assert "--num-generations: got 1" in err.value.render()
