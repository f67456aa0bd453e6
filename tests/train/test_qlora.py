"""QLoRA on CPU through bitsandbytes' CPU backend: a real 4-bit NF4 base, LoRA adapters in fp32,
and a merge that goes through the dequantized base, never into 4-bit weights."""

from __future__ import annotations

import torch

from lmtune.config import load_config
from lmtune.train.recipe import _build_trainer, _setup, train
from lmtune.run.layout import RunDir
from tiny_models import save_tiny_model, write_alpaca


def _cfg(tmp_path, *extra):
    model_dir = save_tiny_model(tmp_path / "base", "llama")
    data = write_alpaca(tmp_path / "train.jsonl", 24)
    return load_config(None, [f"model.name_or_path={model_dir}", f"data.train={data}", "method=qlora",
                              f"output.dir={tmp_path / 'run'}", "data.val_split=0.2", "data.max_length=96",
                              "train.max_steps=3", "train.batch_size=2", "train.grad_accum=1",
                              "train.learning_rate=5e-3", "train.load_best=false", "eval.after_train=false",
                              "output.report=false", *extra])


def test_qlora_base_is_4bit_nf4_and_adapters_fp32(tmp_path):
    import bitsandbytes as bnb

    cfg = _cfg(tmp_path)
    setup = _setup(cfg, RunDir(cfg.output.dir), resume=False)
    trainer = _build_trainer(cfg, RunDir(cfg.output.dir), setup)
    four_bit = [m for m in trainer.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit, "no 4-bit layers: the base was not quantized"
    assert {m.weight.quant_type for m in four_bit} == {"nf4"}
    assert all(m.weight.quant_state.nested for m in four_bit)  # double quantization
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    assert trainer.args.optim == "adamw_torch"  # paged 8-bit AdamW is CUDA-only


def test_qlora_trains_and_merges_through_the_dequantized_base(tmp_path):
    from lmtune.merge import merge

    cfg = _cfg(tmp_path)
    train(cfg, quiet=True)
    out = merge(str(tmp_path / "run"), str(tmp_path / "merged"))
    assert out.max_logit_diff <= 1e-4          # merged == dequantized base + adapter
    assert out.max_logit_diff_4bit is not None  # reported against the 4-bit base + adapter too
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))
    assert all(p.dtype == torch.float32 for p in merged.parameters())  # no 4-bit weights written


# --- bitsandbytes' packed AVX512-BF16 CPU kernel (used for 4-bit inference on CPUs that have it)
# takes only layers with out_features % 32 == 0 and in_features % blocksize == 0. A Llama with
# hidden 64 and intermediate 96 has both kinds: every projection fits except down_proj (in 96).

def _mixed_shape_4bit_model(tmp_path):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from lmtune.models import detect_device, load_model

    cfg = LlamaConfig(vocab_size=64, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(str(tmp_path / "mixed"))
    run_cfg = load_config(None, [f"model.name_or_path={tmp_path / 'mixed'}", "method=qlora",
                                 "data.task=sql"])
    return load_model(str(tmp_path / "mixed"), run_cfg, detect_device(), quantize=True)


def test_cpu_4bit_kernel_shape_rule():
    from lmtune.models import cpu_4bit_kernel_fits

    assert cpu_4bit_kernel_fits(64, 64, 64)
    assert cpu_4bit_kernel_fits(96, 128, 64)          # out 96 = 3 x 32
    assert not cpu_4bit_kernel_fits(32, 96, 64)       # in 96 is not a whole number of blocks
    assert not cpu_4bit_kernel_fits(48, 64, 64)       # out 48 is not a whole number of 32-row blocks
    assert not cpu_4bit_kernel_fits(32, 32, 64)       # the tiny test model's layers


def test_unfit_4bit_layers_leave_the_avx512_kernel_and_fit_ones_keep_it(tmp_path):
    """On any CPU: with the flag bitsandbytes sets on AVX512-BF16 CPUs forced on, only the layers
    whose shapes the kernel can't take are moved to the generic path."""
    import bitsandbytes as bnb

    from lmtune.models import keep_4bit_layers_off_unfit_cpu_kernel

    model = _mixed_shape_4bit_model(tmp_path)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(layers) == 7
    for m in layers.values():
        m.support_avx512bf16_for_cpu = True
    moved = keep_4bit_layers_off_unfit_cpu_kernel(model)
    assert moved == ["model.layers.0.mlp.down_proj"]
    assert {n for n, m in layers.items() if m.support_avx512bf16_for_cpu} == set(layers) - set(moved)


def test_mixed_shape_4bit_model_evaluates_on_this_cpu(tmp_path):
    """Where the CPU has AVX512-BF16 this runs the packed kernel for the fit layers and the generic
    path for down_proj (without the routing it crashes); elsewhere every layer is generic. Either way
    the no-grad logits match the training-mode (generic, gradient-enabled) forward's."""
    model = _mixed_shape_4bit_model(tmp_path)
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    model.train()
    reference = model(ids).logits.detach()
    model.eval()
    with torch.no_grad():
        logits = model(ids).logits
    assert torch.isfinite(logits).all()
    # the packed kernel computes in bf16: agreement to bf16 precision, not bit for bit
    assert torch.allclose(logits, reference, atol=5e-2, rtol=5e-2)


def _load_4bit(model_dir, dtype):
    """Load the base the way lmtune.models.load_model does on a GPU: 4-bit linears, the rest in `dtype`
    (quantization storage and compute dtype too). On CPU, load_model itself always picks fp32."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=dtype, bnb_4bit_quant_storage=dtype)
    return AutoModelForCausalLM.from_pretrained(str(model_dir), quantization_config=q, dtype=dtype,
                                                device_map={"": "cpu"})


def _not_4bit(model):
    import bitsandbytes as bnb

    four_bit = {id(m.weight) for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)}
    return {n: p.dtype for n, p in model.named_parameters() if id(p) not in four_bit and "lora_" not in n}


def test_qlora_keeps_embeddings_head_and_residual_stream_in_bf16(tmp_path):
    from lmtune.train.methods import prepare

    cfg = _cfg(tmp_path, "train.gradient_checkpointing=true")
    model = prepare(_load_4bit(cfg.model.name_or_path, torch.bfloat16), cfg)
    kept = _not_4bit(model)
    assert any("embed_tokens" in n for n in kept) and any("lm_head" in n for n in kept)
    assert set(kept.values()) == {torch.bfloat16}         # peft's kbit preparation made all of these fp32
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    seen = []
    layer = model.get_base_model().model.layers[0]
    layer.register_forward_hook(lambda mod, args, out: seen.append((out[0] if isinstance(out, tuple) else out).dtype))
    ids = torch.randint(0, 300, (1, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(input_ids=ids)
    assert seen == [torch.bfloat16]                        # the residual stream between layers
    assert out.logits.requires_grad                        # input grads on: checkpointed blocks keep a graph


def test_qlora_fp16_base_still_upcasts_for_stability(tmp_path):
    from lmtune.train.methods import prepare

    cfg = _cfg(tmp_path)
    model = prepare(_load_4bit(cfg.model.name_or_path, torch.float16), cfg)
    assert set(_not_4bit(model).values()) == {torch.float32}   # an fp16 residual stream can overflow
