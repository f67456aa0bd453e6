"""lmtune/estimate/speed.py with literal numbers: FLOPs per token worked out by hand on a small shape
(per method, with recomputation), then steps, time and cost."""

from __future__ import annotations

import pytest

from lmtune.estimate.hardware import GIB, Device
from lmtune.estimate.shapes import LinearInfo, ModelShape
from lmtune.estimate.speed import Speed, flops_per_token, speed


# layer linears 10x20 and 5x6 (230 weights), a head 4x8 (32): N = 262; 2 layers, 4 heads of 8
SHAPE = ModelShape("s", "llama", 0, num_layers=2, hidden=32, heads=4, kv_heads=2, head_dim=8, intermediate=0,
                   vocab=8, tied=False, embed_params=0, param_shapes=[],
                   linears=[LinearInfo("l.0.a", 10, 20, 0), LinearInfo("l.1.b", 5, 6, 1),
                            LinearInfo("lm_head", 4, 8, None, is_head=True)])
ATTN = 4 * 2 * 10 * 32   # forward QK^T and AV at seq_len 10: 2560


def test_flops_per_token_by_method_and_recomputation():
    assert flops_per_token(SHAPE, "full", 10, False, 7) == 6 * 262 + 3 * ATTN == 9252
    assert flops_per_token(SHAPE, "lora", 10, False, 7) == 4 * 262 + 3 * ATTN + 6 * 7 == 8770
    assert flops_per_token(SHAPE, "qlora", 10, False, 7) == 8770
    assert flops_per_token(SHAPE, "full", 10, True, 7) == 9252 + 2 * 230 + ATTN == 12272
    assert flops_per_token(SHAPE, "lora", 10, True, 7) == 8770 + 2 * 230 + ATTN == 11790
    assert type(flops_per_token(SHAPE, "full", 10, False, 0)) is float


def test_speed_time_steps_and_cost():
    dev = Device("t", "T", "cuda", GIB, 9.252, 0.5, 2.0)   # 4.626e12 FLOP/s: 5e8 tokens/s of full at 9252
    assert speed(SHAPE, dev, "full", 10, False, 7) == Speed(9252.0, pytest.approx(5e8), None, None, None, None)
    assert speed(SHAPE, dev, "full", 10, False, 7, 1, 100, 0) == Speed(9252.0, pytest.approx(5e8), None, None,
                                                                        None, None)
    assert speed(SHAPE, dev, "full", 10, False, 7).tokens_per_second == pytest.approx(5e8, rel=1e-14)
    one = speed(SHAPE, dev, "full", 10, False, 7, 1, 7, 100)
    assert (one.flops_per_token, one.train_tokens, one.optimizer_steps) == (9252.0, 100, 15)   # last step partial
    assert one.hours == pytest.approx(100 / 5e8 / 3600) and one.cost == pytest.approx(one.hours * 2.0)
    # two GPUs at 90% scaling each: 9e8 tokens/s; 2 h for 6.48e12 tokens, paid for both cards
    two = speed(SHAPE, dev, "full", 10, False, 7, 2, 1000, 6_480_000_000_000)
    assert two.tokens_per_second == pytest.approx(9e8) and two.hours == pytest.approx(2.0)
    assert two.optimizer_steps == 6_480_000_000 and two.cost == pytest.approx(8.0)
    assert speed(SHAPE, dev, "full", 10, False, 7, 1, None, 100).optimizer_steps is None
    lora = speed(SHAPE, dev, "lora", 10, False, 7)
    assert lora.tokens_per_second == pytest.approx(4.626e12 / 8770)
    assert speed(SHAPE, dev, "qlora", 10, False, 7).tokens_per_second == pytest.approx(4.626e12 / 8770 / 1.25)
    ckpt = speed(SHAPE, dev, "lora", 10, True, 7)   # recomputation costs time
    assert ckpt.flops_per_token == 11790.0 and ckpt.tokens_per_second == pytest.approx(4.626e12 / 11790)
