"""Memory breakdown, fit decisions, speed and the `lmtune estimate` command."""

import dataclasses
import json
import subprocess
import sys

import pytest

from lmtune.cli import main
from lmtune.errors import UserError
from lmtune.estimate import EstimateRequest, RunSpec, estimate, largest_batch, load_shape, memory_breakdown
from lmtune.estimate.core import fit_status
from lmtune.estimate.hardware import Device, find_gpu
from lmtune.estimate.lora import LoraSpec
from lmtune.estimate.memory import optimizer_bytes
from lmtune.estimate.speed import flops_per_token

MODEL = "llama-3.1-8b"


def peak(**kw) -> int:
    return memory_breakdown(load_shape(kw.pop("model", MODEL)), RunSpec(**kw), kw.pop("device", "cuda")).peak


def breakdown(**kw):
    return memory_breakdown(load_shape(kw.pop("model", MODEL)), RunSpec(**kw), kw.pop("device", "cuda"))


@pytest.mark.parametrize("method", ["full", "lora", "qlora"])
def test_memory_grows_with_seq_len_and_batch(method):
    for key, values in (("seq_len", (256, 512, 2048)), ("batch", (1, 2, 8))):
        parts = [breakdown(method=method, **{key: v}) for v in values]
        acts = [p.activations for p in parts]
        assert acts[0] < acts[1] < acts[2]
        peaks = [p.peak for p in parts]
        # full fine-tuning of 8B peaks at the optimizer step until activations outgrow the gradients
        assert peaks == sorted(peaks) and (method == "full" or peaks[0] < peaks[1] < peaks[2])
    assert peak(method=method, seq_len=4096, batch=8) > peak(method=method, seq_len=256)
    assert breakdown(method=method, batch=4, grad_ckpt=True).activations < breakdown(method=method, batch=4).activations


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_memory_grows_with_rank(method):
    shape = load_shape(MODEL)
    parts = [memory_breakdown(shape, RunSpec(method=method, lora=LoraSpec(r=r)), "cuda") for r in (8, 16, 64)]
    for key in ("adapters", "gradients", "optimizer", "peak"):
        values = [getattr(p, key) for p in parts]
        assert values == sorted(values) and values[0] < values[-1], key


def test_methods_order_and_weight_dtypes():
    shape = load_shape(MODEL)
    full, lora, qlora = (memory_breakdown(shape, RunSpec(method=m), "cuda") for m in ("full", "lora", "qlora"))
    assert full.peak > lora.peak > qlora.peak
    assert full.weights == shape.total_params * 4            # fp32 master weights
    assert full.gradients == shape.total_params * 4
    assert full.optimizer == shape.total_params * 8          # AdamW: two fp32 states
    assert lora.weights == shape.total_params * 2            # frozen bf16 base on GPU


def test_qlora_quantization_constants():
    shape = load_shape(MODEL)
    quantized = sum(l.weight_params for l in shape.linears if not l.is_head)
    dq = memory_breakdown(shape, RunSpec(method="qlora", double_quant=True), "cuda")
    plain = memory_breakdown(shape, RunSpec(method="qlora", double_quant=False), "cuda")
    assert plain.quant_constants * 8 / quantized == pytest.approx(0.5, abs=1e-6)      # fp32 absmax / 64
    assert dq.quant_constants * 8 / quantized == pytest.approx(0.127, abs=1e-3)       # 8-bit absmax + fp32/256
    assert dq.weights == quantized // 2 + (shape.total_params - quantized) * 2         # non-4-bit parts in bf16


def test_qlora_keeps_non_4bit_parts_in_the_compute_dtype():
    shape = load_shape(MODEL)
    quantized = sum(l.weight_params for l in shape.linears if not l.is_head)
    rest = shape.total_params - quantized                       # embeddings, norms, lm_head
    assert breakdown(method="qlora").weights == quantized // 2 + rest * 2
    assert breakdown(method="qlora", precision="fp16").weights == quantized // 2 + rest * 4   # peft's upcast
    assert memory_breakdown(shape, RunSpec(method="qlora"), "cpu").weights == quantized // 2 + rest * 4  # fp32 on CPU
    # Llama-3.1-8B, r16 all-linear, 2 x 2048 tokens, checkpointing: the target is <= 0.5x LoRA;
    # the bf16 residual stream makes QLoRA's activations LoRA's (within the 4-bit layers' output dtype)
    kw = dict(seq_len=2048, batch=2, grad_ckpt=True)
    lora, qlora = breakdown(method="lora", **kw), breakdown(method="qlora", **kw)
    assert qlora.peak <= 0.5 * lora.peak
    assert qlora.activations == pytest.approx(lora.activations, rel=0.01)
    assert qlora.loss_buffers == lora.loss_buffers


def test_optimizer_states():
    assert optimizer_bytes("adamw_torch", [(4096, 4096)], 4) == (8 * 4096 * 4096, 4 * 4096 * 4096)
    assert optimizer_bytes("adamw_torch_fused", [(10, 10)], 2) == (400, 0)
    state, _ = optimizer_bytes("paged_adamw_8bit", [(4096, 4096), (16, 16)], 2)
    assert state == 2 * 4096 * 4096 + 8 * 4096 * 4096 // 256 + 8 * 256   # small tensors stay 32-bit
    assert optimizer_bytes("sgd", [(100, 100)], 4) == (0, 0)
    assert optimizer_bytes("adafactor", [(100, 50)], 4)[0] == 4 * 150


def _device(memory: int) -> Device:
    return Device("t", "test", "cuda", memory, 100.0, 0.4, 1.0)


def test_fit_at_the_boundary():
    shape, spec = load_shape(MODEL), RunSpec(method="lora", batch=2)
    p = memory_breakdown(shape, spec, "cuda")
    assert fit_status(p, _device(p.peak)) == "yes"
    assert fit_status(p, _device(p.peak - 1)) == "no"
    q = memory_breakdown(shape, RunSpec(method="qlora"), "cuda")
    assert q.paged and fit_status(q, _device(q.peak - q.optimizer // 2)) == "paged"


def test_largest_batch_is_the_boundary():
    shape, spec = load_shape(MODEL), RunSpec(method="qlora", seq_len=1024)
    dev = find_gpu("4090")
    b = largest_batch(shape, spec, dev)
    assert b >= 1
    assert memory_breakdown(shape, spec, "cuda", b).peak <= dev.memory_bytes
    assert memory_breakdown(shape, spec, "cuda", b + 1).peak > dev.memory_bytes
    assert largest_batch(shape, RunSpec(method="full"), dev) == 0


def test_fused_head_saves_memory_over_plain_logits():
    # 12 bytes per logit (fp32 log_softmax output, its gradient, the logits' gradient) vs one tile
    tokens, vocab = 2048, load_shape(MODEL).vocab
    gap = peak(method="lora", seq_len=tokens, loss="plain") - peak(method="lora", seq_len=tokens)
    assert 0.8 * 12 * tokens * vocab < gap < 12 * tokens * vocab


def test_fsdp_shards_states():
    shape = load_shape("llama-3.1-70b")
    one = memory_breakdown(shape, RunSpec(method="full", num_gpus=8), "cuda")
    sharded = memory_breakdown(shape, RunSpec(method="full", num_gpus=8, fsdp=True), "cuda")
    assert sharded.weights == one.weights // 8 and sharded.optimizer == one.optimizer // 8


def test_flops_per_token():
    shape = load_shape(MODEL)
    n = sum(l.weight_params for l in shape.linears)
    attn = 12 * shape.num_layers * 512 * shape.q_width
    assert flops_per_token(shape, "full", 512, False, 0) == 6 * n + attn
    assert flops_per_token(shape, "lora", 512, False, 10) == 4 * n + attn + 60
    assert flops_per_token(shape, "lora", 512, True, 10) > flops_per_token(shape, "lora", 512, False, 10)


def test_time_and_cost():
    base = EstimateRequest(model=MODEL, method="qlora", gpu="4090", dataset_size=1000, tokens_per_example=200)
    one = estimate(base).speed
    two = estimate(dataclasses.replace(base, dataset_size=2000)).speed
    assert two.hours == pytest.approx(2 * one.hours)
    priced = estimate(dataclasses.replace(base, price_per_hour=10.0)).speed
    assert priced.cost == pytest.approx(priced.hours * 10.0)
    assert estimate(dataclasses.replace(base, gpu="h100")).speed.hours < one.hours


def test_request_errors():
    for bad in (dict(method="prefix"), dict(seq_len=0), dict(optimizer="lion"), dict(gpu="voodoo5"),
                dict(gpu="4090", mfu=2.0), dict(epochs=0)):
        with pytest.raises(UserError):
            estimate(EstimateRequest(model=MODEL, **bad))


def test_cli_json(capsys):
    assert main(["estimate", "--model", "llama-2-7b", "--method", "lora", "--gpu", "a100-80", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"]["trainable_params"] == 39_976_960
    assert out["fits"][0]["fits"] == "yes" and out["fits"][0]["max_batch"] >= 1
    assert out["memory_gib"]["peak"] > out["memory_gib"]["weights"]


def test_cli_table_and_user_error(capsys):
    assert main(["estimate", "--model", MODEL, "--method", "qlora", "--gpu", "4090"]) == 0
    text = capsys.readouterr().out
    assert "peak" in text and "RTX 4090" in text and "quantization constants" in text
    assert main(["estimate", "--model", "nope"]) == 2


def test_help_does_not_import_torch():
    code = ("import sys\nfrom lmtune.cli import main\ntry:\n    main(['estimate', '--help'])\n"
            "except SystemExit:\n    pass\nassert 'torch' not in sys.modules, 'torch imported'\n")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
