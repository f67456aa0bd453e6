"""The estimate's formulas with literal expected bytes, worked out by hand on shapes built here
without torch (so every term and branch is isolated in milliseconds): the activation rules of
lmtune/estimate/activations.py (which test_estimate_activations.py checks against autograd's saved
tensors on real tiny models), the dtypes per run (memory.resolve), LoRA targets and counts, optimizer,
weight and loss bytes, memory_breakdown's composition, and core's request checks, fit and batch
search. One file: every section reads the same hand-built shapes (H, I, _llama, _small)."""

import pytest

from lmtune.estimate.activations import (ActivationProfile, Numerics, Trainability, generic_profile,
                                         llama_profile, profile)
from lmtune.estimate.shapes import LinearInfo, ModelShape

H, I, HEADS, SEQ = 8, 40, 3, 16      # hidden, MLP width, heads, sequence length: distinct on purpose


def _gpt2_linears(layers=(0,)):
    out = []
    for k in layers:
        out += [LinearInfo(f"h.{k}.attn.c_attn", H, 3 * H, k, conv1d=True),
                LinearInfo(f"h.{k}.attn.c_proj", H, H, k, conv1d=True),
                LinearInfo(f"h.{k}.mlp.c_fc", H, I, k, conv1d=True),
                LinearInfo(f"h.{k}.mlp.c_proj", I, H, k, conv1d=True)]
    return out + [LinearInfo("lm_head", H, 16, None, is_head=True)]


def _generic(**kw) -> ModelShape:
    base = dict(source="t", model_type="gpt2", total_params=0, num_layers=1, hidden=H, heads=HEADS,
                kv_heads=HEADS, head_dim=H // 2, intermediate=I, vocab=16, tied=True, embed_params=0,
                linears=_gpt2_linears(), param_shapes=[], family="generic", norms_per_layer=2,
                extra={"hidden_act": "gelu"})
    return ModelShape(**{**base, **kw})


FP32 = Numerics("cpu", compute=2, autocast=False, resid=4)   # compute differs: p must be resid here
BF16 = Numerics("cpu", compute=2, autocast=True, resid=4)
CUDA32 = Numerics("cuda", compute=4, autocast=False, resid=4)
FULL = Trainability(full=True)

# the fp32 base case, per token and layer (p = 4, h = 8, i = 40):
#   attention 5*p*h = 160, MLP p*h + 2*p*i = 32 + 320, two LayerNorms 2*(p*h + 8) = 80  -> 592
BASE32 = 592


def test_generic_fp32_counts_attention_mlp_and_norms():
    prof = generic_profile(_generic(), FP32, FULL, SEQ)
    assert prof == ActivationProfile(BASE32, 0.0, 4 * H, (4 * H + 4 + 4 * H) + 4 * H + 32, exact=False)


def test_generic_head_token_without_trained_norm():
    # the final norm keeps its normalized output only when its weight trains: 4h+4 + h*4 + 32
    prof = generic_profile(_generic(), FP32, Trainability(full=False), SEQ)
    assert (prof.per_token_layer, prof.head_token) == (BASE32, 4 * H + 4 + 4 * H + 32)


def test_generic_autocast_counts_activations_at_two_bytes():
    # p = 2: 80 + (16 + 160) + 2*(16 + 8) = 304; checkpoints keep the fp32 residual stream
    prof = generic_profile(_generic(), BF16, FULL, SEQ)
    assert (prof.per_token_layer, prof.ckpt_token_layer) == (304, 4 * H)


@pytest.mark.parametrize("num,extra", [(FP32, 2 * 4 * H), (CUDA32, 2 * 1 * H)], ids=["cpu", "cuda"])
def test_generic_hidden_dropout_keeps_two_masks(num, extra):
    # attention and MLP output dropout: a mask of the input dtype on CPU, of one byte on CUDA
    prof = generic_profile(_generic(hidden_dropout=0.1), num, FULL, SEQ)
    assert prof.per_token_layer == BASE32 + extra


def test_generic_decomposed_gelu_keeps_three_more_mlp_tensors():
    prof = generic_profile(_generic(extra={"hidden_act": "gelu_new"}), FP32, FULL, SEQ)
    assert prof.per_token_layer == BASE32 + 3 * 4 * I


@pytest.mark.parametrize("kw,num,extra", [
    ({"attn_impl": "eager"}, FP32, (2 * 4 + 4) * HEADS * SEQ),
    ({"attn_impl": "eager"}, CUDA32, (2 * 4 + 1) * HEADS * SEQ),
    ({"attention_dropout": 0.1}, FP32, (2 * 4 + 4) * HEADS * SEQ),   # dropout needs the scores too
], ids=["eager-cpu", "eager-cuda", "sdpa-dropout"])
def test_generic_scores_kept_only_when_materialized(kw, num, extra):
    prof = generic_profile(_generic(**kw), num, FULL, SEQ)
    assert prof.per_token_layer == BASE32 + extra


ADAPTED = frozenset({"c_attn", "c_proj"})   # inputs of width 8 (c_attn, attn.c_proj) and 40 (mlp.c_proj)


@pytest.mark.parametrize("num,dropout,extra", [
    # dropout: mask (adapter dtype on CPU) * width + r * lora_A output, per adapted module
    (FP32, 0.1, 4 * (8 + 8 + 40) + 3 * 4 * 4),
    (Numerics("cpu", 4, False, 4, adapter=2), 0.1, 2 * (8 + 8 + 40) + 3 * 4 * 2),
    (FP32, 0.0, 3 * 4 * 4),                                    # no dropout: lora_A outputs only
    (Numerics("cpu", 4, False, 4, adapter=2), 0.0, 3 * 4 * 2),
], ids=["fp32-dropout", "adapter2-dropout", "fp32-nodropout", "adapter2-nodropout"])
def test_generic_lora_terms_per_adapted_module(num, dropout, extra):
    t = Trainability(False, ADAPTED, r=4, lora_dropout=dropout)
    assert generic_profile(_generic(), num, t, SEQ).per_token_layer == BASE32 + extra


def test_generic_lora_under_cuda_autocast():
    # p = 2 (304 base), one-byte masks, lora_A outputs in the compute dtype
    t = Trainability(False, ADAPTED, r=4, lora_dropout=0.1)
    num = Numerics("cuda", compute=2, autocast=True, resid=4)
    assert generic_profile(_generic(), num, t, SEQ).per_token_layer == 304 + 1 * (8 + 8 + 40) + 3 * 4 * 2


def test_generic_lora_counts_one_layer_of_modules():
    # three identical layers: still one layer's modules; a one-layer model must find its layer 0
    t = Trainability(False, ADAPTED, r=4)
    three = _generic(num_layers=3, linears=_gpt2_linears((0, 1, 2)))
    assert generic_profile(three, FP32, t, SEQ).per_token_layer == BASE32 + 3 * 4 * 4
    only_c_attn = Trainability(False, frozenset({"c_attn"}), r=4)
    assert generic_profile(_generic(), FP32, only_c_attn, SEQ).per_token_layer == BASE32 + 4 * 4


def test_profile_dispatches_on_family():
    assert profile(_generic(), FP32, FULL, SEQ) == generic_profile(_generic(), FP32, FULL, SEQ)
    assert not profile(_generic(), FP32, FULL, SEQ).exact


# ---------------------------------------------------------------- the Llama-family rules
# h = 8, 2 query heads of width 6 (q width 12), 1 kv head (kv width 6), gated MLP of width 40

def _llama_linears(layers=(0, 1), fused=False):
    out = []
    for k in layers:
        pre = f"model.layers.{k}"
        attn = ([LinearInfo(f"{pre}.self_attn.qkv_proj", H, 24, k)] if fused else
                [LinearInfo(f"{pre}.self_attn.q_proj", H, 12, k), LinearInfo(f"{pre}.self_attn.k_proj", H, 6, k),
                 LinearInfo(f"{pre}.self_attn.v_proj", H, 6, k)])
        mlp = ([LinearInfo(f"{pre}.mlp.gate_up_proj", H, 2 * I, k)] if fused else
               [LinearInfo(f"{pre}.mlp.gate_proj", H, I, k), LinearInfo(f"{pre}.mlp.up_proj", H, I, k)])
        out += attn + [LinearInfo(f"{pre}.self_attn.o_proj", 12, H, k)] + mlp + [
            LinearInfo(f"{pre}.mlp.down_proj", I, H, k)]
    return out + [LinearInfo("lm_head", H, 16, None, is_head=True)]


def _llama(**kw) -> ModelShape:
    base = dict(source="t", model_type="llama", total_params=0, num_layers=2, hidden=H, heads=2,
                kv_heads=1, head_dim=6, intermediate=I, vocab=16, tied=False, embed_params=0,
                linears=_llama_linears(), param_shapes=[], family="llama", norms_per_layer=2)
    return ModelShape(**{**base, **kw})


ALL7 = frozenset({"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
LIN_PARAMS = 96 + 48 + 48 + 96 + 3 * 320     # one layer's Linear weights (both layouts): 1248


def _lora(dropout, adapted=ALL7):
    return Trainability(False, adapted, r=4, lora_dropout=dropout, adapter_params_per_layer=100)


def test_llama_full_fp32():
    # norms 2*(4h+4+4h) = 136; q/k/v share one fp32 input 32; SDPA q 48 + k,v (4+4)*6 + lse 4*2 = 104;
    # attention output 48 (o_proj reads it: nothing more); gate/up input 32; 3*4*40 = 480; down input 160
    prof = llama_profile(_llama(), CUDA32, FULL, SEQ)
    assert prof == ActivationProfile(992, 0.0, 4 * H, 68 + 4 * H + 32, exact=True)


def test_llama_full_under_autocast_copies_per_reader():
    # bf16 copies per reader of the fp32 stream: q/k/v 3*16, gate/up 2*16; SDPA 2*12 + 4*6 + 8 = 56;
    # attention output 24; 3*2*40 = 240; down input 2*40 = 80; static: bf16 copies of the fp32 weights
    prof = llama_profile(_llama(), BF16, FULL, SEQ)
    assert (prof.per_token_layer, prof.static_layer, prof.ckpt_token_layer) == (616, 2 * LIN_PARAMS, 4 * H)


def test_llama_fused_projections_have_one_reader():
    shape = _llama(linears=_llama_linears(fused=True), fused_qkv=True)
    prof = llama_profile(shape, BF16, FULL, SEQ)
    assert (prof.per_token_layer, prof.static_layer) == (616 - 32 - 16, 2 * LIN_PARAMS)


def test_llama_extra_norms_count_in_the_linear_dtype():
    # Gemma-2's two extra norms read bf16 Linear outputs: 2*(4h+4+2h) = 104
    assert llama_profile(_llama(norms_per_layer=4), BF16, FULL, SEQ).per_token_layer == 616 + 104


@pytest.mark.parametrize("kw,num,expected", [
    # eager: q 48, k and v repeated to all heads 2*4*12, fp32 scores + probabilities (4+4)*2*16 = 256
    ({"attn_impl": "eager"}, CUDA32, 992 - 104 + 48 + 96 + 256),
    ({"attn_impl": "eager", "attention_dropout": 0.1}, CUDA32, 1288 + (1 + 4) * 2 * SEQ),   # 1-byte mask
    ({"attn_impl": "eager", "attention_dropout": 0.1}, Numerics("cpu", 4, False, 4), 1288 + (4 + 4) * 2 * SEQ),
    ({"attention_dropout": 0.1}, CUDA32, 992),             # SDPA keeps its dropout state internally
], ids=["eager", "eager-dropout-cuda", "eager-dropout-cpu", "sdpa-dropout"])
def test_llama_attention_scores(kw, num, expected):
    assert llama_profile(_llama(**kw), num, FULL, SEQ).per_token_layer == expected


def test_llama_lora_fp32_with_dropout():
    # per adapted module: mask (4 bytes on CPU) + dropped input: q/k/v 3*64, o 96, gate/up 2*64, down 320;
    # norms without trained weights 2*36; lora_A outputs 7*4*4; SDPA 104, attention output 48, 480
    prof = llama_profile(_llama(), Numerics("cpu", 4, False, 4), _lora(0.1), SEQ)
    assert prof == ActivationProfile(1552, 0.0, 4 * H, 36 + 4 * H + 32, exact=True)


def test_llama_lora_fp32_without_dropout_shares_inputs():
    prof = llama_profile(_llama(), Numerics("cpu", 4, False, 4), _lora(0.0), SEQ)
    assert prof.per_token_layer == 72 + 32 + 104 + 48 + 32 + 480 + 160 + 112


def test_llama_lora_bf16_base_autocast_with_dropout_on_cuda():
    # 1-byte masks + bf16 dropped copies: q/k/v 3*24, o 36, gate/up 2*24, down 120; lora_A 7*4*2;
    # static: bf16 copies of the fp32 adapters (100 params per layer)
    prof = llama_profile(_llama(), Numerics("cuda", 2, True, 2, 4), _lora(0.1), SEQ)
    assert (prof.per_token_layer, prof.static_layer, prof.ckpt_token_layer, prof.head_token) == (
        724, 200, 2 * H, 36 + 2 * H + 32)


def test_llama_lora_autocast_without_dropout_copies_per_adapter():
    prof = llama_profile(_llama(), Numerics("cpu", 2, True, 2, 4), _lora(0.0), SEQ)
    assert (prof.per_token_layer, prof.static_layer) == (632, 200)


def test_llama_lora_adapters_in_compute_dtype_add_no_static_copies():
    prof = llama_profile(_llama(), Numerics("cpu", 2, True, 2, 2), _lora(0.0), SEQ)
    # adapters already bf16: one shared input per reader group (o_proj reads the kept attention output),
    # no per-adapter copies, no static
    assert (prof.per_token_layer, prof.static_layer) == (72 + 16 + 56 + 24 + 0 + 16 + 240 + 80 + 56, 0.0)


def test_llama_qlora_cpu_casts_inputs_to_the_adapter_dtype():
    # 4-bit layers return the input dtype (fp32 here); peft casts each adapter's input to bf16 once
    num = Numerics("cpu", 4, False, 4, adapter=2, quantized=True)
    assert llama_profile(_llama(), num, _lora(0.0), SEQ).per_token_layer == 944


def test_llama_lora_on_some_modules_only():
    # q and v adapted (with dropout), k a frozen reader: the shared input is kept once for nothing
    # (frozen k keeps none), so only the two dropped copies and masks count: 2*64; 2 lora_A outputs 2*4*4
    t = _lora(0.1, frozenset({"q_proj", "v_proj"}))
    prof = llama_profile(_llama(), Numerics("cpu", 4, False, 4), t, SEQ)
    assert prof.per_token_layer == 72 + 128 + 104 + 48 + 0 + 0 + 480 + 0 + 32


def test_profile_dispatches_llama_family_with_its_sequence_length():
    s = _llama(attn_impl="eager")
    assert profile(s, CUDA32, FULL, SEQ) == llama_profile(s, CUDA32, FULL, SEQ)
    assert profile(s, CUDA32, FULL, SEQ).per_token_layer == 1288
    g = _generic(attn_impl="eager")
    assert profile(g, FP32, FULL, SEQ).per_token_layer == BASE32 + (2 * 4 + 4) * HEADS * SEQ


def test_llama_qlora_cpu_dropout_copies_in_the_adapter_dtype():
    # masks and dropped copies in bf16 (2 bytes), not the fp32 stream: q/k/v 3*32, o 48, gate/up 2*32,
    # down 160; lora_A outputs 7*4*2; SDPA 104 and the attention output 48 in fp32
    num = Numerics("cpu", 4, False, 4, adapter=2, quantized=True)
    assert llama_profile(_llama(), num, _lora(0.1), SEQ).per_token_layer == 1128


def test_llama_qlora_with_fp32_upcast_under_autocast():
    # peft's upcast: fp32 stream, 4-bit layers return fp32 (3*4*40 = 480, down input fp32 via its cast
    # copy 40 + 80) while SDPA and the attention output stay bf16 (56 + 24); bf16 adapters: no static
    num = Numerics("cuda", 2, True, 4, adapter=2, quantized=True)
    prof = llama_profile(_llama(), num, _lora(0.1), SEQ)
    assert (prof.per_token_layer, prof.static_layer) == (964, 0.0)


def test_llama_lora_on_fp32_weights_under_autocast_copies_only_the_adapters():
    # fp32 frozen base + bf16 autocast: the base weights do not train, so no bf16 master copies of them
    prof = llama_profile(_llama(), Numerics("cpu", 2, True, 4, 4), _lora(0.0), SEQ)
    assert (prof.per_token_layer, prof.static_layer) == (632, 200)


def test_llama_one_layer_model_static_copies():
    s = _llama(num_layers=1, linears=_llama_linears((0,)))
    assert llama_profile(s, BF16, FULL, SEQ).static_layer == 2 * LIN_PARAMS


# ---------------------------------------------------------------- memory.resolve: dtypes per run

from lmtune.estimate.lora import LoraSpec  # noqa: E402
from lmtune.estimate.memory import RunSpec, resolve  # noqa: E402

LORA_QV = LoraSpec(r=4, targets=("q_proj", "v_proj"))


@pytest.mark.parametrize("spec,device,numerics,wb,opt", [
    # LoRA: frozen 16-bit base on GPU, fp32 on CPU; fp32 adapters
    (RunSpec("lora", lora=LORA_QV), "cuda", Numerics("cuda", 2, True, 2, 4, False), 2, "adamw_torch"),
    (RunSpec("lora", lora=LORA_QV), "cpu", Numerics("cpu", 4, False, 4, 4, False), 4, "adamw_torch"),
    (RunSpec("lora", lora=LORA_QV, precision="bf16", weights_dtype="fp32"), "cpu",
     Numerics("cpu", 2, True, 4, 4, False), 4, "adamw_torch"),
    (RunSpec("lora", lora=LORA_QV, precision="fp32", weights_dtype="bf16"), "cuda",
     Numerics("cuda", 2, False, 2, 4, False), 2, "adamw_torch"),
    (RunSpec("lora", lora=LORA_QV, precision="fp16"), "cuda", Numerics("cuda", 2, True, 2, 4, False), 2,
     "adamw_torch"),
    # QLoRA: non-4-bit parts in bf16 on a bf16 GPU, fp32 after peft's fp16 upcast and on CPU; bf16 adapters
    (RunSpec("qlora", lora=LORA_QV), "cuda", Numerics("cuda", 2, True, 2, 2, True), 2, "paged_adamw_8bit"),
    (RunSpec("qlora", lora=LORA_QV, weights_dtype="fp16"), "cuda", Numerics("cuda", 2, True, 4, 2, True), 4,
     "paged_adamw_8bit"),
    (RunSpec("qlora", lora=LORA_QV, precision="fp16"), "cuda", Numerics("cuda", 2, True, 4, 2, True), 4,
     "paged_adamw_8bit"),
    (RunSpec("qlora", lora=LORA_QV), "cpu", Numerics("cpu", 4, False, 4, 2, True), 4, "adamw_torch"),
    (RunSpec("qlora", lora=LORA_QV, optimizer="sgd"), "cuda", Numerics("cuda", 2, True, 2, 2, True), 2, "sgd"),
    # full: fp32 master weights, bf16 autocast on GPU
    (RunSpec("full"), "cuda", Numerics("cuda", 2, True, 4, 4, False), 4, "adamw_torch"),
    (RunSpec("full"), "cpu", Numerics("cpu", 4, False, 4, 4, False), 4, "adamw_torch"),
], ids=["lora-cuda", "lora-cpu", "lora-cpu-autocast", "lora-fp32-on-bf16", "lora-fp16", "qlora-cuda",
        "qlora-fp16-weights", "qlora-fp16", "qlora-cpu", "qlora-sgd", "full-cuda", "full-cpu"])
def test_resolve_dtypes_and_optimizer(spec, device, numerics, wb, opt):
    r = resolve(_llama(), spec, device)
    assert (r.numerics, r.weight_bytes, r.optimizer) == (numerics, wb, opt)


def test_resolve_trainable_sets():
    shape = _llama(total_params=5000, param_shapes=[("model.layers.0.self_attn.q_proj.weight", (12, 8)),
                                                    ("model.norm.weight", (8,))])
    full = resolve(shape, RunSpec("full"), "cuda")
    assert (full.trainable, full.trainable_tensors, full.adapted, full.lora_params) == (
        5000, ((12, 8), (8,)), frozenset(), 0)
    lora = resolve(shape, RunSpec("lora", lora=LORA_QV), "cuda")
    per_layer = 4 * (8 + 12) + 4 * (8 + 6)          # q: A 4x8, B 12x4; v: A 4x8, B 6x4
    assert (lora.trainable, lora.lora_params, lora.adapted) == (2 * per_layer, 2 * per_layer,
                                                                frozenset({"q_proj", "v_proj"}))
    assert lora.trainable_tensors == ((4, 8), (12, 4), (4, 8), (6, 4)) * 2


# ---------------------------------------------------------------- lora: targets and counts

from lmtune.errors import UserError  # noqa: E402
from lmtune.estimate.lora import count_lora, target_linears  # noqa: E402


@pytest.mark.parametrize("value,targets", [
    (None, "all-linear"), ("all-linear", "all-linear"),
    ("q_proj, v_proj,", ("q_proj", "v_proj")), (" q_proj ", ("q_proj",)),
    (r".*\.mlp\..*", r".*\.mlp\..*"), ("q_proj|v_proj", "q_proj|v_proj"), ("x^", "x^"), ("a$", "a$"),
    ("a+", "a+"), ("a?", "a?"), ("(a)", "(a)"), ("[ab]", "[ab]"), ("a\\d", "a\\d"),
    ("Wqkv", ("Wqkv",)), ("mlp.X", ("mlp.X",)),          # X and W are no regex characters
    (["q_proj", "o_proj"], ("q_proj", "o_proj")), (("k_proj",), ("k_proj",)),
])
def test_lora_targets_from_cli_and_config(value, targets):
    spec = LoraSpec.from_targets(value, r=3, dropout=0.2)
    assert (spec.targets, spec.r, spec.dropout) == (targets, 3, 0.2)


def test_lora_target_matching_by_name_suffix_and_regex():
    names = lambda spec: [lin.name for lin in target_linears(_llama(), spec)]  # noqa: E731
    assert names(LoraSpec(targets=("o_proj",))) == ["model.layers.0.self_attn.o_proj",
                                                    "model.layers.1.self_attn.o_proj"]
    assert names(LoraSpec(targets=("model.layers.1.mlp.down_proj",))) == ["model.layers.1.mlp.down_proj"]
    # a suffix must be a whole name part; a regex must match the whole name
    with pytest.raises(UserError) as err:
        target_linears(_llama(), LoraSpec(targets=("_proj",)))
    assert "--lora-targets ('_proj',): no module of t matches" in err.value.render()
    assert err.value.problems == ["linear layers in this model: down_proj, gate_proj, k_proj, o_proj, q_proj, "
                                  "up_proj, v_proj", "or use all-linear"]      # sorted, once each, no lm_head
    assert names(LoraSpec(targets=r".*\.1\..*_proj")) == [f"model.layers.1.{n}" for n in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
        "mlp.up_proj", "mlp.down_proj")]
    with pytest.raises(UserError):
        target_linears(_llama(), LoraSpec(targets=r"layers\.1"))        # a partial match is not enough
    assert len(names(LoraSpec())) == 14                                   # all-linear: not the head


def test_lora_counts_dora_and_biases():
    lins = [LinearInfo("l.0.a", 8, 6, 0, bias=6), LinearInfo("l.0.b", 5, 7, 0), LinearInfo("head", 8, 9, None,
                                                                                          is_head=True)]
    shape = _llama(linears=lins, param_shapes=[("l.0.a.weight", (6, 8)), ("l.0.a.bias", (6,)),
                                               ("l.0.n.bias", (8,)), ("l.0.n.weight", (8,))])
    plain = count_lora(shape, LoraSpec(r=2))
    assert (plain.trainable, plain.tensors) == (2 * 14 + 2 * 12, [(2, 8), (6, 2), (2, 5), (7, 2)])
    assert count_lora(shape, LoraSpec(r=2, use_dora=True)).tensors == [(2, 8), (6, 2), (6,), (2, 5), (7, 2), (7,)]
    assert count_lora(shape, LoraSpec(r=2, use_dora=True)).trainable == 52 + 13
    assert count_lora(shape, LoraSpec(r=2, bias="all")).trainable == 52 + 6 + 8
    assert count_lora(shape, LoraSpec(r=2, bias="lora_only")).tensors[-1] == (6,)
    assert count_lora(shape, LoraSpec(r=2, bias="lora_only")).trainable == 52 + 6
    assert [l.name for l in count_lora(shape, LoraSpec(r=2)).adapted] == ["l.0.a", "l.0.b"]


# ---------------------------------------------------------------- memory: optimizer, weights, loss

from lmtune.estimate.memory import _loss_buffers, optimizer_bytes, weight_bytes  # noqa: E402


@pytest.mark.parametrize("opt,tensors,pb,expected", [
    ("adamw_torch", [(3, 5), (7,)], 2, (2 * 22 * 2, 22 * 2)),        # foreach temporary: every element once
    ("adamw_torch_fused", [(3, 5), (7,)], 4, (2 * 22 * 4, 0)),
    ("adamw_8bit", [(4095,)], 2, (8 * 4095, 0)),                      # below 4,096 elements: 32-bit states
    ("adamw_8bit", [(4096,), (10,)], 2, (2 * 4096 + 8 * 16 + 80, 0)),
    ("paged_adamw_8bit", [(4097,)], 2, (2 * 4097 + 8 * 17, 0)),       # a partial block has its absmax
    ("paged_adamw_32bit", [(3, 5), (2,)], 2, (8 * 17, 0)),
    ("adafactor", [(3, 5, 7), (9,), (4, 6)], 4, (4 * (3 + 35) + 4 * 9 + 4 * 10, 0)),  # rows + the rest
    ("sgd", [(3, 5)], 4, (0, 0)),
])
def test_optimizer_state_bytes(opt, tensors, pb, expected):
    assert optimizer_bytes(opt, tensors, pb) == expected


WEIGHTED = dict(total_params=5000)
QUANTIZED = 2 * LIN_PARAMS                                     # the layers' Linears, not lm_head


@pytest.mark.parametrize("shape,spec,device,expected", [
    (_llama(**WEIGHTED), RunSpec("lora", lora=LORA_QV), "cuda", (5000 * 2, 0, 272 * 4)),
    (_llama(**WEIGHTED), RunSpec("full"), "cpu", (5000 * 4, 0, 0)),
    # 4 bits per quantized weight, the rest (embeddings, norms, head) in bf16; bf16 adapters
    (_llama(**WEIGHTED), RunSpec("qlora", lora=LORA_QV), "cuda",
     (QUANTIZED // 2 + (5000 - QUANTIZED) * 2, int(QUANTIZED * (8 / 64 + 32 / (64 * 256)) / 8), 272 * 2)),
    (_llama(**WEIGHTED), RunSpec("qlora", lora=LORA_QV, double_quant=False), "cpu",
     (QUANTIZED // 2 + (5000 - QUANTIZED) * 4, QUANTIZED * 4 // 64, 272 * 2)),
    # GPT-2's Conv1D layers are not quantized by bitsandbytes
    (_generic(**WEIGHTED), RunSpec("qlora", lora=LoraSpec(r=4, targets=("c_attn",))), "cuda",
     (5000 * 2, 0, 4 * (8 + 24) * 2)),
], ids=["lora", "full", "qlora-dq", "qlora-cpu", "qlora-conv1d"])
def test_weight_bytes(shape, spec, device, expected):
    assert weight_bytes(shape, spec, resolve(shape, spec, device)) == expected


@pytest.mark.parametrize("vocab,spec,device,tokens,expected", [
    # one (rows x 32,768) chunk in the compute dtype + fp32 and residual-dtype accumulators per token
    (16, RunSpec("lora", lora=LORA_QV), "cuda", 100, 100 * 32768 * 2 + 100 * 8 * (4 + 2)),
    # CPU: 7.25 fp32 tiles of (rows x vocab) on top
    (16, RunSpec("lora", lora=LORA_QV), "cpu", 100, 100 * 32768 * 4 + 29 * 100 * 16 + 100 * 8 * 8),
    (40000, RunSpec("lora", lora=LORA_QV), "cpu", 10, 10 * 32768 * 4 + 29 * 10 * 32768 + 10 * 8 * 8),
    # full: rows capped at 4,096; lm_head's fp32 gradient; a bf16 copy of an fp32 head chunk under autocast
    (16, RunSpec("full"), "cuda", 5000, 4096 * 32768 * 2 + 5000 * 8 * 8 + 16 * 8 * 4 + 16 * 8 * 2),
    (40000, RunSpec("full"), "cuda", 10, 10 * 32768 * 2 + 10 * 8 * 8 + 40000 * 8 * 4 + 32768 * 8 * 2),
    (16, RunSpec("lora", lora=LORA_QV, loss="plain"), "cuda", 100, 8 * 16 * 100),
], ids=["lora-cuda", "lora-cpu", "big-vocab-cpu", "full-cuda", "big-vocab-full", "plain"])
def test_loss_buffers(vocab, spec, device, tokens, expected):
    shape = _llama(vocab=vocab)
    assert _loss_buffers(shape, resolve(shape, spec, device), tokens, spec) == expected


# ---------------------------------------------------------------- memory_breakdown: the composition

from lmtune.estimate.memory import (CPU_BASELINE, CUDA_CONTEXT, GIB, memory_breakdown)  # noqa: E402

PARAMS = [("model.embed_tokens.weight", (16, 8)), ("model.layers.0.mlp.down_proj.weight", (8, 40)),
          ("model.layers.1.mlp.down_proj.weight", (8, 40)), ("model.norm.weight", (8,))]   # 776, 320 a layer


def _small(**kw):
    return _llama(total_params=776, param_shapes=PARAMS, **kw)


# full fine-tuning on CUDA, 2 rows of 4 tokens: fp32 weights and gradients 776*4 = 3104, AdamW 6208
# (+ a 3104 foreach temporary); activations 2 layers * (616*8 + 2496 static) + head 132*8 = 15904;
# loss: one 8 x 32,768 bf16 chunk 524288 + 8*8*(4+4) + fp32 head gradient 512 + bf16 head copy 256;
# lm_head's gradient 16*8*4 = 512 during the first micro-batch's backward
FULL_BACKWARD = 15904 + 525568 + 512
FULL_TENSORS = 3104 + 6208 + FULL_BACKWARD


def test_breakdown_full_cuda():
    m = memory_breakdown(_small(), RunSpec("full", seq_len=4, batch=2), "cuda")
    overhead = CUDA_CONTEXT + int(0.05 * FULL_TENSORS)
    assert (m.weights, m.quant_constants, m.adapters, m.gradients, m.optimizer, m.activations, m.loss_buffers,
            m.optimizer_step_temp, m.overhead, m.peak, m.paged, m.notes) == (
        3104, 0, 0, 3104, 6208, 15904, 525568, 3104, overhead, FULL_TENSORS + overhead, False, [])
    assert memory_breakdown(_small(), RunSpec("full", seq_len=4, batch=1), "cuda", batch=2) == m
    assert m.as_gib() == {k: round(getattr(m, k) / GIB, 3) for k in (
        "weights", "quant_constants", "adapters", "gradients", "optimizer", "activations", "loss_buffers",
        "optimizer_step_temp", "overhead", "peak")}
    assert m.as_gib()["overhead"] == 0.6 and m.as_gib()["peak"] == 0.601


@pytest.mark.parametrize("kw,acts,loss,extra_backward", [
    # checkpointing: every layer's fp32 input (2*32*8) + one recomputed layer (7424)
    ({"grad_ckpt": True}, 512 + 7424 + 1056, 525568, 512),
    # plain loss: the fp32 log_softmax output is an activation (4*16*8), 8 bytes per logit transient
    ({"loss": "plain"}, 15904 + 512, 8 * 16 * 8, 512),
    # accumulation: every gradient exists during the later micro-batches' backward
    ({"grad_accum": 2}, 15904, 525568, 3104),
], ids=["ckpt", "plain", "accum"])
def test_breakdown_full_cuda_variants(kw, acts, loss, extra_backward):
    m = memory_breakdown(_small(), RunSpec("full", seq_len=4, batch=2, **kw), "cuda")
    tensors = 3104 + 6208 + acts + loss + extra_backward
    assert (m.activations, m.loss_buffers, m.peak) == (acts, loss, tensors + CUDA_CONTEXT + int(0.05 * tensors))


def test_breakdown_fsdp_shards_states_and_gathers_two_layers():
    m = memory_breakdown(_small(), RunSpec("full", seq_len=4, batch=2, num_gpus=2, fsdp=True), "cuda")
    # weights, gradients, states and temporaries halved; two gathered fp32 layers 2*320*4 as activations
    assert (m.weights, m.gradients, m.optimizer, m.optimizer_step_temp, m.activations) == (
        1552, 1552, 3104, 1552, 15904 + 2560)
    tensors = 1552 + 3104 + 15904 + 2560 + 525568 + 256
    assert m.peak == tensors + CUDA_CONTEXT + int(0.05 * tensors)
    one = memory_breakdown(_small(), RunSpec("full", seq_len=4, batch=2, num_gpus=2), "cuda")
    assert one.weights == 3104                                        # no FSDP: nothing sharded


def test_breakdown_cpu_overhead_and_temporaries():
    m = memory_breakdown(_small(), RunSpec("full", seq_len=4, batch=2), "cpu")
    # CPU AdamW (no foreach): two temporaries of the biggest tensor, 2*320*4
    assert m.optimizer_step_temp == 2560
    tensors = m.peak - m.overhead
    assert m.overhead == CPU_BASELINE + int(0.2 * (tensors - m.weights - m.quant_constants))
    sgd = memory_breakdown(_small(), RunSpec("full", seq_len=4, batch=2, optimizer="sgd"), "cpu")
    assert sgd.optimizer_step_temp == 0 and sgd.optimizer == 0


def test_breakdown_lora_and_qlora():
    lora = memory_breakdown(_small(), RunSpec("lora", seq_len=4, batch=2, lora=LORA_QV), "cuda")
    # fp32 adapters: 272 params; gradients 272*4; AdamW 2*272*4; no lm_head gradient
    assert (lora.weights, lora.adapters, lora.gradients, lora.optimizer, lora.optimizer_step_temp) == (
        776 * 2, 272 * 4, 272 * 4, 272 * 8, 272 * 4)
    # per layer: norms 72, q and v dropped copies + 1-byte masks 2*24, SDPA 56 + output 24, MLP 240,
    # lora_A 2*4*2 = 456 a token, + bf16 copies of the layer's fp32 adapters 2*136; head 84 a token
    assert lora.activations == 2 * (456 * 8 + 272) + 84 * 8
    assert lora.peak - lora.overhead == (776 * 2 + 272 * 4 + 272 * 8 + lora.activations + lora.loss_buffers)
    qlora = memory_breakdown(_small(), RunSpec("qlora", seq_len=4, batch=2, lora=LORA_QV), "cuda")
    assert qlora.paged and not lora.paged
    assert (qlora.adapters, qlora.gradients) == (272 * 2, 272 * 2)      # TRL's bf16 adapters
    acc = memory_breakdown(_small(), RunSpec("lora", seq_len=4, batch=2, lora=LORA_QV, grad_accum=2), "cuda")
    assert acc.peak - acc.overhead == lora.peak - lora.overhead + 272 * 4


def test_breakdown_notes_the_approximate_formula():
    g = _generic(total_params=776, param_shapes=PARAMS)
    m = memory_breakdown(g, RunSpec("full", seq_len=4, batch=2), "cuda")
    assert m.notes == ["activations of gpt2 use Korthikanti et al.'s GPT formula (approximate)"]


def _tensors_at_peak(m, head_grads=0):
    return (m.weights + m.quant_constants + m.adapters + m.optimizer
            + max(m.activations + m.loss_buffers + head_grads, m.gradients + m.optimizer_step_temp))


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_breakdown_qlora_counts_its_constants(device):
    m = memory_breakdown(_small(), RunSpec("qlora", seq_len=4, batch=2, lora=LORA_QV), device)
    assert m.quant_constants > 0 and m.gradients == 272 * 2       # bf16 adapters' gradients, also on CPU
    assert m.peak - m.overhead == _tensors_at_peak(m)
    if device == "cpu":   # the allocator slack is on what the step allocates, not on the loaded weights
        assert m.overhead == CPU_BASELINE + int(0.2 * (m.peak - m.overhead - m.weights - m.quant_constants))


def test_breakdown_full_in_bf16_keeps_bf16_gradients():
    m = memory_breakdown(_small(), RunSpec("full", seq_len=4, batch=2, weights_dtype="bf16"), "cuda")
    assert (m.weights, m.gradients, m.optimizer) == (776 * 2, 776 * 2, 776 * 4)


def test_breakdown_peak_at_the_optimizer_step():
    # a million fp32 parameters with tiny activations: gradients + the step's temporaries dominate
    m = memory_breakdown(_llama(total_params=10 ** 6, param_shapes=PARAMS), RunSpec("full", seq_len=4, batch=2), "cuda")
    assert m.peak - m.overhead == 4 * 10 ** 6 + 6208 + 4 * 10 ** 6 + 3104


def test_activation_profile_per_layer_adapters_and_sequence_length():
    from lmtune.estimate.memory import activation_profile

    def prof(shape, spec):
        return activation_profile(shape, spec, resolve(shape, spec, "cuda"))

    # one adapted module (20 params) in a 3-layer model: the per-layer mean, whole parameters (6)
    three = _llama(num_layers=3, linears=_llama_linears((0, 1, 2)))
    one_q = RunSpec("lora", lora=LoraSpec(r=1, targets=("model.layers.0.self_attn.q_proj",)))
    assert prof(three, one_q).static_layer == 2 * (20 // 3)
    single = _llama(num_layers=1, linears=_llama_linears((0,)))
    assert prof(single, RunSpec("lora", lora=LORA_QV)).static_layer == 2 * 136
    # the run's sequence length reaches eager attention's score term
    eager = _llama(attn_impl="eager")
    spec = RunSpec("full", seq_len=SEQ)
    assert prof(eager, spec).per_token_layer == llama_profile(eager, resolve(eager, spec, "cuda").numerics,
                                                              FULL, SEQ).per_token_layer


# ---------------------------------------------------------------- core: request checks, fit, batch search

import dataclasses  # noqa: E402

from lmtune.estimate import core  # noqa: E402
from lmtune.estimate.core import EstimateRequest, fit_status, largest_batch  # noqa: E402
from lmtune.estimate.hardware import Device  # noqa: E402
from lmtune.estimate.memory import MemoryBreakdown  # noqa: E402


def test_request_check_lists_every_problem():
    req = EstimateRequest(method="prefix", seq_len=0, batch=0, grad_accum=0, lora_r=0, num_gpus=0,
                          optimizer="lion", loss="mean", dataset_size=0, tokens_per_example=0, epochs=0.0,
                          lora_dropout=0.95, gpu_mem=float("nan"), price_per_hour=-1.0, mfu=float("inf"))
    with pytest.raises(UserError) as err:
        req.check()
    assert err.value.args[0] == "invalid estimate options"
    assert err.value.problems == [
        "--method: got 'prefix', allowed: full, lora, qlora",
        "--seq-len: got 0, must be >= 1", "--batch: got 0, must be >= 1", "--grad-accum: got 0, must be >= 1",
        "--lora-r: got 0, must be >= 1", "--num-gpus: got 0, must be >= 1",
        "--optimizer: got 'lion', allowed: auto, adamw_torch, adamw_torch_fused, adamw_8bit, paged_adamw_8bit, "
        "paged_adamw_32bit, sgd, adafactor",
        "--loss: got 'mean', allowed: fused, plain",
        "--dataset-size: got 0, must be >= 1", "--tokens-per-example: got 0, must be >= 1",
        "--epochs: got 0.0, must be > 0", "--lora-dropout: got 0.95, must be <= 0.9",
        "--gpu-mem: got nan, must be a finite number", "--price-per-hour: got -1.0, must be >= 0",
        "--mfu: got inf, must be a finite number"]
    with pytest.raises(UserError) as err:
        EstimateRequest(lora_dropout=-0.1, mfu=1.01, gpu_mem=0.0).check()
    assert err.value.problems == ["--lora-dropout: got -0.1, must be >= 0", "--gpu-mem: got 0.0, must be > 0",
                                  "--mfu: got 1.01, must be <= 1"]
    with pytest.raises(UserError) as err:
        EstimateRequest(mfu=0.0, epochs=-1.0).check()
    assert err.value.problems == ["--epochs: got -1.0, must be > 0", "--mfu: got 0.0, must be > 0"]


def test_request_check_accepts_the_boundaries():
    for ok in (EstimateRequest(), EstimateRequest(lora_dropout=0.0, price_per_hour=0.0, mfu=1.0, epochs=0.01,
                                                  gpu_mem=0.5, dataset_size=1, tokens_per_example=1, seq_len=1),
               EstimateRequest(method="full", optimizer="adafactor", loss="plain", lora_dropout=0.9),
               EstimateRequest(method="qlora", optimizer="auto", mfu=None, price_per_hour=None)):
        ok.check()


def test_request_run_spec_carries_every_field():
    req = EstimateRequest(method="qlora", seq_len=64, batch=3, grad_accum=5, grad_ckpt=True, lora_r=7,
                          lora_targets="q_proj,v_proj", lora_dropout=0.1, use_dora=True, optimizer="sgd",
                          precision="fp16", weights_dtype="bf16", double_quant=False, loss="plain", num_gpus=2,
                          fsdp=True)
    assert req.run_spec() == RunSpec("qlora", 64, 3, 5, True, LoraSpec(r=7, targets=("q_proj", "v_proj"),
                                                                       dropout=0.1, use_dora=True),
                                     "sgd", "fp16", "bf16", False, "plain", 2, True)


def _mem(peak, optimizer=0, paged=False):
    return MemoryBreakdown(0, 0, 0, 0, optimizer, 0, 0, 0, 0, peak, paged=paged)


def _dev(memory, kind="cuda"):
    return Device("t", "test", kind, memory, 100.0, 0.4, 1.0)


def test_fit_status_boundaries():
    assert fit_status(_mem(100), _dev(100)) == "yes"
    assert fit_status(_mem(101), _dev(100)) == "no"
    assert fit_status(_mem(101, optimizer=1, paged=True), _dev(100)) == "paged"   # states may leave the GPU
    assert fit_status(_mem(102, optimizer=1, paged=True), _dev(100)) == "no"
    assert fit_status(_mem(101, optimizer=50, paged=False), _dev(100)) == "no"


def test_largest_batch_search():
    spec = RunSpec("lora", seq_len=4, lora=LORA_QV)
    shape = _small()
    peak = lambda b: memory_breakdown(shape, spec, "cuda", b).peak  # noqa: E731
    for b in (1, 2, 3, 5, 6, 7, 100):
        assert largest_batch(shape, spec, _dev(peak(b))) == b
        assert largest_batch(shape, spec, _dev(peak(b) - 1)) == b - 1
    assert largest_batch(shape, spec, _dev(peak(core.MAX_BATCH + 1))) == core.MAX_BATCH
    assert largest_batch(shape, spec, _dev(peak(core.MAX_BATCH - 1))) == core.MAX_BATCH - 1
    assert type(largest_batch(shape, spec, _dev(peak(7)))) is int          # a count of rows, also in JSON
    # the search starts at one row, whatever micro-batch the run asks for
    assert largest_batch(shape, dataclasses.replace(spec, batch=3), _dev(peak(2))) == 2
    assert largest_batch(shape, spec, _dev(10 ** 15)) == core.MAX_BATCH
    # memory is computed for the device's kind (CPU: a smaller fixed overhead, more batch fits)
    assert largest_batch(shape, spec, _dev(peak(1), kind="cpu")) > largest_batch(shape, spec, _dev(peak(1))) == 1


def test_train_tokens():
    assert core._train_tokens(EstimateRequest(seq_len=100)) is None
    assert core._train_tokens(EstimateRequest(seq_len=100, dataset_size=30, epochs=2.5)) == 7500
    assert core._train_tokens(EstimateRequest(seq_len=100, dataset_size=30, tokens_per_example=7, epochs=1.5)) == 315


def test_device_for():
    assert core.device_for(EstimateRequest()) is None
    custom = core.device_for(EstimateRequest(gpu_mem=2.0, gpu="mycard", price_per_hour=3.0, mfu=0.5))
    assert (custom.name, custom.kind, custom.memory_bytes, custom.price_per_hour, custom.mfu) == (
        "mycard", "cuda", 2 * GIB, 3.0, 0.5)
    assert core.device_for(EstimateRequest(gpu="CPU")).kind == "cpu"
    h100 = core.device_for(EstimateRequest(gpu="h100", mfu=0.25))
    assert (h100.key, h100.mfu) == ("h100", 0.25)


def test_fit_on_one_device():
    from lmtune.estimate.speed import speed

    shape, spec = _small(), RunSpec("lora", seq_len=4, batch=2, grad_accum=3, lora=LORA_QV)
    dev = Device("t", "test", "cuda", memory_breakdown(shape, spec, "cuda").peak - 1, 100.0, 0.4, 2.5)
    req = EstimateRequest(seq_len=4, dataset_size=10, tokens_per_example=5, epochs=2.0)
    fit = core.fit_on(shape, spec, dev, req, 272)
    sp = speed(shape, dev, "lora", 4, False, 272, 1, 24, 100)
    assert (fit.device, fit.memory_gib, fit.peak_gib, fit.fits, fit.max_batch, fit.fits_with_ckpt, fit.hours,
            fit.cost) == ("test", round(dev.memory_bytes / GIB, 2), round((dev.memory_bytes + 1) / GIB, 2), "no",
                          1, True, sp.hours, sp.cost)
    assert fit.hours > 0 and fit.cost == pytest.approx(fit.hours * 2.5)
    ckpt_one_row = memory_breakdown(shape, dataclasses.replace(spec, grad_ckpt=True), "cuda", 1).peak
    tight = dataclasses.replace(dev, memory_bytes=ckpt_one_row - 1)
    assert not core.fit_on(shape, spec, tight, req, 272).fits_with_ckpt
    # the run's method and recomputation reach the time estimate
    qspec = dataclasses.replace(spec, method="qlora", grad_ckpt=True)
    assert core.fit_on(shape, qspec, dev, req, 272).hours == speed(shape, dev, "qlora", 4, True, 272, 1, 24, 100).hours
    # checkpointing is judged at one row: a card that holds exactly that
    exact = dataclasses.replace(tight, memory_bytes=tight.memory_bytes + 1)
    assert core.fit_on(shape, spec, exact, req, 272).fits_with_ckpt
    assert core.fit_on(shape, dataclasses.replace(spec, grad_ckpt=True), tight, req, 272).fits_with_ckpt


def test_estimate_on_a_preset():
    from lmtune.estimate import load_shape
    from lmtune.estimate.hardware import find_gpu, gpu_catalog
    from lmtune.estimate.speed import speed

    req = EstimateRequest(model="qwen2.5-0.5b", method="lora", seq_len=256, batch=2, gpu="4090", dataset_size=100)
    est = core.estimate(req)
    shape, spec = load_shape("qwen2.5-0.5b"), req.run_spec()
    r = resolve(shape, spec, "cuda")
    assert est.request == dataclasses.asdict(req) and est.optimizer == "adamw_torch"
    assert est.model == {"source": shape.source, "model_type": "qwen2", "total_params": shape.total_params,
                         "trainable_params": r.trainable,
                         "trainable_pct": round(100 * r.trainable / shape.total_params, 4),
                         "layers": 24, "hidden": 896, "vocab": shape.vocab}
    assert est.memory == memory_breakdown(shape, spec, "cuda") and est.device == find_gpu("4090").name
    assert [f.device for f in est.fits] == [find_gpu("4090").name]
    # 2 rows of 256 tokens a step; 100 examples of seq_len tokens, 3 epochs by default
    assert est.speed == speed(shape, find_gpu("4090"), "lora", 256, False, r.lora_params, 1, 512, 100 * 256 * 3)
    assert est.fits[0] == core.fit_on(shape, spec, find_gpu("4090"), req, r.lora_params)
    out = est.to_dict()
    assert out["memory_gib"] == est.memory.as_gib() and out["model"] == est.model and out["fits"][0]["device"]
    # no --gpu: a bf16 CUDA run, checked against every card of the catalog with the overrides applied
    anyone = core.estimate(dataclasses.replace(req, gpu=None, price_per_hour=2.0, mfu=0.5))
    assert anyone.device == "any CUDA GPU (bf16)" and anyone.speed is None
    assert anyone.memory == memory_breakdown(shape, spec, "cuda")
    assert [f.device for f in anyone.fits] == [d.name for d in gpu_catalog()]
    first = dataclasses.replace(gpu_catalog()[0], price_per_hour=2.0, mfu=0.5)
    assert anyone.fits[0] == core.fit_on(shape, spec, first, req, r.lora_params)
    assert anyone.fits[0].cost == pytest.approx(anyone.fits[0].hours * 2.0)
    # QLoRA on a named card: its optimizer (paged 8-bit on CUDA) and its slower speed
    qreq = dataclasses.replace(req, method="qlora", lora_r=8, grad_accum=2, num_gpus=2, grad_ckpt=True)
    q, qspec = core.estimate(qreq), qreq.run_spec()
    assert (q.optimizer, q.model["trainable_params"], q.model["trainable_pct"]) == ("paged_adamw_8bit", 4_399_104,
                                                                                     0.8904)
    # with recomputation, on 2 GPUs, 256 tokens x 2 rows x 2 accumulation steps x 2 GPUs a step
    assert q.speed == speed(shape, find_gpu("4090"), "qlora", 256, True, 4_399_104, 2, 2048, 100 * 256 * 3)
    assert q.memory == memory_breakdown(shape, qspec, "cuda")
    cpu = core.estimate(dataclasses.replace(req, gpu="cpu", method="full"))
    assert cpu.memory == memory_breakdown(shape, dataclasses.replace(spec, method="full"), "cpu")
    with pytest.raises(UserError):
        core.estimate(dataclasses.replace(req, seq_len=0))
