"""lmtune/train/methods beyond LoRA's settings (tests/train/test_critical_settings.py): which module
`methods.prepare` picks per method, full fine-tuning unfreezing every weight, the parameter count,
QLoRA's fp16 path (peft's kbit preparation with the configured checkpointing) and the QLoRA
hardware checks. Tiny models, no training."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from lmtune.train import methods
from lmtune.config import load_config
from lmtune.errors import UserError
from tiny_models import save_tiny_model

# Imported here, not only where used: a mutation run (scripts/mutation.sh) forks every mutant's
# tests from one process that collected this module, so these heavy imports are paid once.
import bitsandbytes  # noqa: E402,F401
import peft.tuners.lora  # noqa: E402,F401
import transformers.models.llama.modeling_llama  # noqa: E402,F401
from peft import PeftModel  # noqa: E402,F401
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402,F401


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("methods") / "base", "llama")


def _model(base, dtype=torch.float32):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(base), dtype=dtype)


def _load_4bit_fp16(base):
    """A 4-bit base with fp16 for the rest, as lmtune.models.load_model loads one on an fp16 GPU."""
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float16,
                           bnb_4bit_quant_storage=torch.float16)
    return AutoModelForCausalLM.from_pretrained(str(base), quantization_config=q, dtype=torch.float16,
                                                device_map={"": "cpu"})


def _cfg(base, method, *extra):
    return load_config(None, [f"model.name_or_path={base}", "data.task=sql", f"method={method}", "lora.r=4",
                              "lora.alpha=8", *extra])


def test_full_unfreezes_every_weight_and_attaches_nothing(base):
    model = _model(base)
    for p in list(model.parameters())[::2]:
        p.requires_grad_(False)
    out = methods.prepare(model, _cfg(base, "full"))
    assert out is model
    assert all(p.requires_grad for p in out.parameters())
    trainable, total = methods.count_parameters(out)
    assert trainable == total == sum(p.numel() for p in model.parameters())


def test_lora_is_chosen_for_lora_and_keeps_an_fp16_base_in_fp16(base):
    """methods.prepare('lora') goes to methods/lora.py: an fp16 base stays fp16 (methods/qlora.py
    would send it through peft's kbit preparation, which upcasts it to fp32)."""
    model = methods.prepare(_model(base, torch.float16), _cfg(base, "lora"))
    assert type(model).__name__ == "PeftModelForCausalLM"
    base_dtypes = {p.dtype for n, p in model.named_parameters() if "lora_" not in n}
    assert base_dtypes == {torch.float16}
    trainable, total = methods.count_parameters(model)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert trainable == lora > 0
    assert total == sum(p.numel() for p in _model(base).parameters())  # the base alone, adapters excluded


@pytest.mark.parametrize("checkpointing", [False, True])
def test_qlora_fp16_base_goes_through_peft_kbit_preparation_with_the_configured_checkpointing(base, checkpointing):
    import bitsandbytes as bnb

    model = methods.prepare(_load_4bit_fp16(base),
                            _cfg(base, "qlora", f"train.gradient_checkpointing={str(checkpointing).lower()}"))
    assert type(model).__name__ == "PeftModelForCausalLM"
    four_bit = {id(m.weight) for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert four_bit
    kept = {p.dtype for n, p in model.named_parameters() if "lora_" not in n and id(p) not in four_bit}
    assert kept == {torch.float32}  # peft's kbit preparation upcast the fp16 rest
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    inner = model.get_base_model()
    assert inner.is_gradient_checkpointing is checkpointing
    if checkpointing:
        layer = inner.model.layers[0]
        assert layer._gradient_checkpointing_func.keywords == {"use_reentrant": False}
    r = {m.r["default"] for m in model.modules() if hasattr(m, "lora_A") and hasattr(m, "r")}
    assert r == {4}  # the adapter from the config is attached (methods/lora.attach)


def test_qlora_non_fp16_base_goes_the_lora_way(base):
    model = methods.prepare(_model(base), _cfg(base, "qlora", "train.gradient_checkpointing=true"))
    inner = model.get_base_model()
    assert not inner.is_gradient_checkpointing  # the Trainer turns it on, not the method
    assert model.get_input_embeddings()(torch.tensor([[1, 2]])).requires_grad  # lora.prepare's input-grad hook
    assert {p.dtype for p in model.parameters()} == {torch.float32}


# ---------------------------------------------------------------- QLoRA hardware checks

def test_qlora_check_passes_on_this_cpu_machine():
    from lmtune.train.methods.qlora_check import check_qlora_supported

    assert importlib.util.find_spec("bitsandbytes") is not None and not torch.cuda.is_available()
    check_qlora_supported()


def test_qlora_check_without_bitsandbytes(monkeypatch):
    from lmtune.train.methods.qlora_check import check_qlora_supported

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    with pytest.raises(UserError) as info:
        check_qlora_supported()
    assert info.value.render() == (
        "error: method qlora needs bitsandbytes, which is not installed\n"
        "  pip install bitsandbytes==0.50.2 (it has CPU and CUDA backends), or use method: lora")


@pytest.mark.parametrize("major, ok", [(3, False), (4, False), (5, True), (8, True)])
def test_qlora_check_gpu_compute_capability(monkeypatch, major, ok):
    from lmtune.train.methods.qlora_check import check_qlora_supported

    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda dev: asked.append(dev) or (major, 7))
    if ok:
        check_qlora_supported()
    else:
        with pytest.raises(UserError) as info:
            check_qlora_supported()
        assert info.value.render() == (
            f"error: method qlora: GPU compute capability {major}.x is too old for bitsandbytes 4-bit\n"
            "  use method: lora, or a GPU with compute capability >= 5.0")
    assert asked == [0]


def test_qlora_check_refuses_apple_mps(monkeypatch):
    from lmtune.train.methods.qlora_check import check_qlora_supported

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    with pytest.raises(UserError) as info:
        check_qlora_supported()
    assert info.value.render() == ("error: method qlora: bitsandbytes 4-bit is not supported on Apple MPS\n"
                                   "  use method: lora on this machine")
    monkeypatch.setattr(torch.backends, "mps", None)  # a torch build without the MPS backend
    check_qlora_supported()
