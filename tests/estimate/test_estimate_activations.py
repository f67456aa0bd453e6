"""The activation rules count exactly what autograd saves: checked tensor by tensor with
saved_tensors_hooks on tiny Llama, Qwen2 and Mistral models, for full fine-tuning and LoRA, in fp32
and under bf16 autocast (on CPU, where dropout masks take the input's dtype)."""

import pytest
import torch

from lmtune.estimate import RunSpec, shape_from_config
from lmtune.estimate.lora import LoraSpec
from lmtune.estimate.memory import activation_profile, resolve
from estimate_helpers import build

B, S = 2, 32
ALL = "all-linear"

# name: (method, precision, weights dtype, lora targets, lora dropout, adapter dtype override)
MODES = {
    "full-fp32": ("full", "fp32", "fp32", ALL, 0.0, None),
    "lora-fp32-dropout": ("lora", "fp32", "fp32", ALL, 0.05, None),
    "lora-fp32-nodropout": ("lora", "fp32", "fp32", ALL, 0.0, None),
    "lora-qv": ("lora", "fp32", "fp32", ("q_proj", "v_proj"), 0.05, None),
    "full-autocast-bf16": ("full", "bf16", "fp32", ALL, 0.0, None),
    "lora-bf16-base-autocast": ("lora", "bf16", "bf16", ALL, 0.05, None),
}


def _saved_bytes(model, autocast: bool) -> int:
    """Bytes of distinct storages autograd saves in one forward, parameters excluded."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen.setdefault(st.data_ptr(), st.nbytes())
        return t

    ids = torch.randint(0, 128, (B, S))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(input_ids=ids, labels=ids)
    return sum(seen.values())


def _measure_layer(arch, method, precision, wdtype, targets, dropout) -> float:
    """Saved bytes of one decoder layer: a 3-layer minus a 2-layer model of the same shape."""
    from peft import LoraConfig, get_peft_model

    out = []
    for layers in (2, 3):
        model, _ = build(arch, num_hidden_layers=layers)
        model = model.to(torch.bfloat16 if wdtype == "bf16" else torch.float32).train()
        if method == "lora":
            tm = targets if targets == ALL else list(targets)
            model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=tm))
        out.append(_saved_bytes(model, precision == "bf16"))
    return out[1] - out[0]


# every mode on Llama; the two most different ones on Qwen2 (tied, biased qkv) and Mistral (1 kv head)
COMBOS = [("llama", m) for m in sorted(MODES)] + [(a, m) for a in ("qwen2", "mistral")
                                                   for m in ("lora-fp32-dropout", "full-autocast-bf16")]


@pytest.mark.parametrize("arch,mode", COMBOS)
def test_layer_activations_match_saved_tensors(arch, mode):
    method, precision, wdtype, targets, dropout, _ = MODES[mode]
    _, raw = build(arch)
    shape = shape_from_config(raw, arch)
    spec = RunSpec(method=method, seq_len=S, batch=B, precision=precision, weights_dtype=wdtype,
                   lora=LoraSpec(r=8, targets=targets, dropout=dropout))
    prof = activation_profile(shape, spec, resolve(shape, spec, "cpu"))
    predicted = prof.per_token_layer * B * S + prof.static_layer
    assert prof.exact
    assert predicted == pytest.approx(_measure_layer(arch, method, precision, wdtype, targets, dropout), abs=64)


def test_checkpointing_keeps_only_layer_inputs():
    _, raw = build("llama")
    shape = shape_from_config(raw, "llama")
    spec = RunSpec(method="lora", seq_len=S, batch=B, precision="fp32", grad_ckpt=True)
    prof = activation_profile(shape, spec, resolve(shape, spec, "cpu"))
    assert prof.ckpt_token_layer == 4 * shape.hidden        # one fp32 hidden state per token
    assert prof.ckpt_token_layer < prof.per_token_layer / 5


# ---------------------------------------------------------------- the generic (GPT-2, Phi) formula

def _generic_case(arch, mode, **config):
    method, precision, wdtype, targets, dropout, _ = MODES[mode]
    _, raw = build(arch, **config)
    shape = shape_from_config(raw, arch)
    spec = RunSpec(method=method, seq_len=S, batch=B, precision=precision, weights_dtype=wdtype,
                   lora=LoraSpec(r=8, targets=targets, dropout=dropout))
    prof = activation_profile(shape, spec, resolve(shape, spec, "cpu"))
    assert not prof.exact
    layers = "n_layer" if arch == "gpt2" else "num_hidden_layers"
    out = []
    for n in (2, 3):
        from peft import LoraConfig, get_peft_model

        model, _ = build(arch, **config, **{layers: n})
        model = model.to(torch.bfloat16 if wdtype == "bf16" else torch.float32).train()
        if method == "lora":
            model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules=targets))
        out.append(_saved_bytes(model, precision == "bf16"))
    return prof.per_token_layer * B * S + prof.static_layer, out[1] - out[0]


FP32_MODES = ("full-fp32", "lora-fp32-dropout", "lora-fp32-nodropout")


@pytest.mark.parametrize("act", ["gelu_new", "gelu"])
@pytest.mark.parametrize("mode", FP32_MODES)
def test_gpt2_formula_matches_saved_tensors_in_fp32(mode, act):
    """Every term counts: attention (with its s x s scores: GPT-2 has attention dropout), MLP with
    the activation as transformers writes it, LayerNorm statistics, dropout masks, LoRA per module."""
    predicted, measured = _generic_case("gpt2", mode, activation_function=act)
    assert predicted == pytest.approx(measured, abs=64)


@pytest.mark.parametrize("mode", FP32_MODES)
def test_phi_formula_is_within_15_percent_of_saved_tensors_in_fp32(mode):
    """Phi runs attention and MLP in parallel on one normed input, which the generic formula counts
    as two (and LoRA dropout then copies it per module): measured 1-11% apart."""
    predicted, measured = _generic_case("phi", mode)
    assert predicted == pytest.approx(measured, rel=0.15)


@pytest.mark.xfail(strict=True, reason="known gap: under bf16 autocast the generic formula counts every "
                   "activation at 2 bytes; LayerNorm and the residual stream stay fp32 (measured 33-43% low)")
@pytest.mark.parametrize("arch", ["gpt2", "phi"])
def test_generic_formula_under_autocast(arch):
    predicted, measured = _generic_case(arch, "full-autocast-bf16")
    assert predicted == pytest.approx(measured, rel=0.15)


@pytest.mark.xfail(strict=True, reason="known gap: Phi-3 (fused qkv_proj/gate_up_proj) keeps one more "
                   "hidden-size fp32 tensor per token and layer than the Llama rules count (measured 5% low)")
def test_phi3_full_fine_tuning_matches_saved_tensors():
    method, precision, wdtype, targets, dropout, _ = MODES["full-fp32"]
    _, raw = build("phi3")
    shape = shape_from_config(raw, "phi3")
    spec = RunSpec(method=method, seq_len=S, batch=B, precision=precision, weights_dtype=wdtype)
    prof = activation_profile(shape, spec, resolve(shape, spec, "cpu"))
    predicted = prof.per_token_layer * B * S + prof.static_layer
    assert predicted == pytest.approx(_measure_layer("phi3", method, precision, wdtype, targets, dropout), abs=64)


def _qlora_layer_bytes(tmp_path, upcast: bool) -> int:
    """Saved bytes of one decoder layer of a 4-bit (bf16 storage/compute) LoRA model under bf16
    autocast, adapters in bf16 as TRL casts them; `upcast`: prepared by peft's
    prepare_model_for_kbit_training (non-4-bit parts to fp32) instead of lmtune's preparation."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=torch.bfloat16)
    out = []
    for layers in (2, 3):
        model, _ = build("llama", num_hidden_layers=layers)
        model.save_pretrained(tmp_path / str(layers))
        model = AutoModelForCausalLM.from_pretrained(tmp_path / str(layers), quantization_config=q,
                                                     dtype=torch.bfloat16, device_map={"": "cpu"})
        if upcast:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=ALL))
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
        out.append(_saved_bytes(model.train(), autocast=True))
    return out[1] - out[0]


@pytest.mark.parametrize("upcast", [False, True], ids=["lmtune-bf16", "peft-fp32-upcast"])
def test_qlora_layer_activations_match_saved_tensors(tmp_path, upcast):
    # the residual stream takes the embeddings' dtype: bf16 with lmtune's preparation, fp32 after peft's
    _, raw = build("llama")
    shape = shape_from_config(raw, "llama")
    spec = RunSpec(method="qlora", seq_len=S, batch=B, precision="bf16", weights_dtype="fp32" if upcast else "bf16",
                   lora=LoraSpec(r=8, targets=ALL, dropout=0.05))
    prof = activation_profile(shape, spec, resolve(shape, spec, "cpu"))
    predicted = prof.per_token_layer * B * S + prof.static_layer
    assert predicted == pytest.approx(_qlora_layer_bytes(tmp_path, upcast), abs=64)
