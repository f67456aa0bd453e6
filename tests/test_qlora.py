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
