"""QLoRA on CPU through bitsandbytes' CPU backend: a real 4-bit NF4 base, LoRA adapters in fp32,
and a merge that goes through the dequantized base, never into 4-bit weights."""

from __future__ import annotations

import torch

from lmtune.config import load_config
from lmtune.train import _build_trainer, _setup, train
from lmtune.rundir import RunDir
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
    from lmtune.methods import prepare

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
    from lmtune.methods import prepare

    cfg = _cfg(tmp_path)
    model = prepare(_load_4bit(cfg.model.name_or_path, torch.float16), cfg)
    assert set(_not_4bit(model).values()) == {torch.float32}   # an fp16 residual stream can overflow
