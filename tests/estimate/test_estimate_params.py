"""Parameter counts: presets reproduce the published totals; LoRA counts equal peft's."""

import pytest

from lmtune.errors import UserError
from lmtune.estimate import LoraSpec, count_lora, load_shape, preset_names, shape_from_config
from estimate_helpers import TINY, build

# Totals published with (or computed by transformers from) each model's config.json.
PUBLISHED = {
    "llama-2-7b": 6_738_415_616, "llama-2-13b": 13_015_864_320, "llama-2-70b": 68_976_648_192,
    "llama-3.1-8b": 8_030_261_248, "llama-3.1-70b": 70_553_706_496, "mistral-7b-v0.1": 7_241_732_096,
    "qwen2.5-0.5b": 494_032_768, "qwen2.5-1.5b": 1_543_714_304, "qwen2.5-3b": 3_085_938_688,
    "qwen2.5-7b": 7_615_616_512, "qwen2.5-14b": 14_770_033_664, "qwen2.5-32b": 32_763_876_352,
    "qwen2.5-72b": 72_706_203_648, "phi-3-mini": 3_821_079_552, "gemma-2-9b": 9_241_705_984,
    # small models; the model cards' rounded figures agree: Qwen3 0.6B/1.7B/4B/8.2B with 0.44B/1.4B/3.6B/6.95B
    # outside the embeddings, Llama 3.2 1.23B/3.21B, Gemma 3 1B and 4.3B (with its vision tower), Phi-4-mini
    # 3.8B, SmolLM3 3.08B (the Hub's safetensors count shows a tied embedding twice, e.g. Qwen3-1.7B's 2.03B)
    "qwen3-0.6b": 596_049_920, "qwen3-1.7b": 1_720_574_976, "qwen3-4b": 4_022_468_096, "qwen3-8b": 8_190_735_360,
    "llama-3.2-1b": 1_235_814_400, "llama-3.2-3b": 3_212_749_824, "gemma-3-1b": 999_885_952,
    "gemma-3-4b": 4_300_079_472, "phi-4-mini": 3_836_021_760, "smollm3-3b": 3_075_098_624,
}
ALL_SEVEN = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def test_every_preset_is_listed():
    assert set(preset_names()) == set(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_total_matches_published(name):
    assert load_shape(name).total_params == PUBLISHED[name]


def test_seed_lora_count_is_corrected():
    shape = load_shape("llama-2-7b")
    # the tutorial figure in docs/estimate.md: 4,194,304 for r=16 on all seven projections; that is r=8 on q_proj and v_proj
    assert count_lora(shape, LoraSpec(r=16, targets=ALL_SEVEN)).trainable == 39_976_960
    assert count_lora(shape, LoraSpec(r=16)).trainable == 39_976_960          # all-linear = the same seven
    assert count_lora(shape, LoraSpec(r=8, targets=("q_proj", "v_proj"))).trainable == 4_194_304


def test_hub_alias_resolves_offline():
    assert load_shape("meta-llama/Llama-3.1-8B").total_params == PUBLISHED["llama-3.1-8b"]


def test_unknown_model_and_targets_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not a preset"):
        load_shape("no-such-model")
    with pytest.raises(UserError, match="cannot read"):
        load_shape("someone/not-cached-anywhere")
    with pytest.raises(UserError, match="no module"):
        count_lora(load_shape("llama-2-7b"), LoraSpec(targets=("c_attn",)))


def test_directory_with_config_json(tmp_path):
    import json
    (tmp_path / "config.json").write_text(json.dumps(TINY["llama"]))
    model, _ = build("llama")
    assert load_shape(str(tmp_path)).total_params == sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------- against peft

SPECS = {
    "llama": [dict(r=8), dict(r=4, targets=("q_proj", "v_proj")), dict(r=2, targets=r".*\.mlp\..*_proj"),
              dict(r=8, use_dora=True), dict(r=8, bias="all")],
    "qwen2": [dict(r=8), dict(r=4, targets=("q_proj", "v_proj")), dict(r=8, bias="lora_only")],
    "mistral": [dict(r=16), dict(r=4, targets=("k_proj", "o_proj", "down_proj"))],
    "gpt2": [dict(r=8), dict(r=4, targets=("c_attn",)), dict(r=8, bias="lora_only")],
    "phi": [dict(r=8), dict(r=4, targets=("q_proj", "v_proj", "fc1"))],
    "phi3": [dict(r=8), dict(r=4, targets=("qkv_proj",))],
}


def _peft_count(model, spec: LoraSpec) -> tuple[int, int]:
    from peft import LoraConfig, get_peft_model

    targets = spec.targets if isinstance(spec.targets, str) else list(spec.targets)
    cfg = LoraConfig(r=spec.r, lora_alpha=2 * spec.r, target_modules=targets, use_dora=spec.use_dora,
                     bias=spec.bias, task_type="CAUSAL_LM")
    return get_peft_model(model, cfg).get_nb_trainable_parameters()


@pytest.mark.parametrize("arch,i", [(a, i) for a, specs in SPECS.items() for i in range(len(specs))])
def test_lora_count_equals_peft(arch, i):
    spec = LoraSpec(**SPECS[arch][i])
    model, raw = build(arch)
    shape = shape_from_config(raw, arch)
    assert shape.total_params == sum(p.numel() for p in model.parameters())
    trainable, total = _peft_count(model, spec)
    assert count_lora(shape, spec).trainable == trainable
    new_params = count_lora(shape, LoraSpec(r=spec.r, targets=spec.targets, use_dora=spec.use_dora)).trainable
    assert shape.total_params + new_params == total          # trained biases were already in the base


@pytest.mark.parametrize("name,spec", [
    ("llama-2-7b", LoraSpec(r=16)),
    ("qwen2.5-0.5b", LoraSpec(r=32, targets=("q_proj", "k_proj", "v_proj", "o_proj"))),
])
def test_lora_count_equals_peft_on_real_shapes(name, spec):
    """peft itself, on the preset instantiated on the meta device (no memory)."""
    import json

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from lmtune.estimate.shapes import preset_dir

    raw = json.loads((preset_dir() / f"{name}.json").read_text())
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**raw))
        trainable, total = _peft_count(model, spec)
    assert count_lora(load_shape(name), spec).trainable == trainable
    assert load_shape(name).total_params + trainable == total


def test_embedded_tiny_base_counts_match_its_weights():
    from lmtune.estimate.shapes import _embedded_tiny

    path = _embedded_tiny()
    if not (path / "config.json").is_file():
        pytest.skip("the embedded base is not built in this checkout")
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path))
    assert load_shape("tiny").total_params == sum(p.numel() for p in model.parameters())
    assert count_lora(load_shape("tiny"), LoraSpec(r=16)).trainable == _peft_count(model, LoraSpec(r=16))[0]
