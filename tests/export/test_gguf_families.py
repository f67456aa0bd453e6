"""Every family lmtune exports to GGUF, proven by logits: a tiny random model of each family
(tests/helpers/tiny_families.py) is exported, the file is run by a reference forward pass that
computes as llama.cpp's graphs do (tests/helpers/gguf_reference.py), and its logits are compared
with transformers' on a prompt longer than the test sliding windows. f32 must agree to float
precision; q8_0 loosely. llama.cpp itself is compared in scripts/check_gguf_families.py."""

from __future__ import annotations

import pytest
import torch

from gguf_reference import GGUFModel, forward
from lmtune.cli import main as cli
from lmtune.export import export
from tiny_families import FAMILIES, save_family_model

IDS = [5, 17, 99, 3, 250, 40, 8, 77, 12, 200, 31, 64]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each family's tiny model, built once per module; tests that edit one copy it first."""
    root, cache = tmp_path_factory.mktemp("families"), {}

    def get(family):
        if family not in cache:
            cache[family] = save_family_model(root / family, family)
        return cache[family]
    return get


def _hf_logits(path, **overrides):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), **overrides).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor([IDS])).logits[0].double()


@pytest.mark.parametrize("family", FAMILIES)
def test_family_gguf_computes_the_hf_logits(tmp_path, saved, family):
    path = saved(family)
    # ggml's GELU is the tanh form; GPT-NeoX's "gelu" is erf's: compare like with like (the gap
    # between the two forms is what llama.cpp itself shows, see docs/deploy.md)
    want = _hf_logits(path, **({"hidden_act": "gelu_pytorch_tanh"} if family == "gpt_neox" else {}))
    res = export(str(path), str(tmp_path / "f32"), quant="f32")
    gguf_model = GGUFModel(res.gguf)
    got = forward(gguf_model, IDS)
    torch.testing.assert_close(got, want, atol=1e-4 * want.abs().max().item(), rtol=0)
    if family == "phi3":  # llama.cpp would look for </s>, <unk>, <s> in a vocabulary named "phi3"
        assert gguf_model.kv["general.name"] == "phi 3"
    if family in ("llama", "gemma2", "phi3", "gpt_neox"):  # the layouts that differ most; q8_0 is slow to write
        res = export(str(path), str(tmp_path / "q8"), quant="q8_0")
        got = forward(GGUFModel(res.gguf), IDS)
        assert (got - want).abs().max() < 0.08 * want.abs().max()


def test_llama3_rope_freqs_are_the_converters(tmp_path, saved):
    """llama3 scaling: short wavelengths 1, long ones `factor`, the band between blended (the
    tiny config's head_dim 16 puts frequencies in all three)."""
    import gguf

    path = saved("llama")
    res = export(str(path), str(tmp_path / "out"), quant="f32")
    reader = gguf.GGUFReader(str(res.gguf))
    freqs = next(t for t in reader.tensors if t.name == "rope_freqs.weight").data.tolist()
    assert freqs[:4] == [1.0] * 4 and freqs[5:] == [8.0] * 3 and 1.0 < freqs[4] < 8.0


@pytest.mark.parametrize("family, change, message", [
    ("smollm3", {"no_rope_layers": [1, 0, 1, 1]}, "no_rope_layers [1, 0, 1, 1]"),  # llama.cpp: every 4th only
    ("qwen2", {"use_sliding_window": True, "sliding_window": 4}, "qwen2 with use_sliding_window"),
    ("gemma2", {"query_pre_attn_scalar": 64}, "query_pre_attn_scalar 64"),
    ("llama", {"rope_parameters": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}}, "RoPE scaling 'dynamic'"),
    ("llama", {"text_config": {"model_type": "llama"}}, "is a multimodal model"),
])
def test_what_llama_cpp_would_run_differently_is_refused_before_any_folder(tmp_path, saved, capsys, family,
                                                                          change, message):
    import json
    import shutil

    path = shutil.copytree(saved(family), tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, **change}))
    assert cli(["export", str(path), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family, legacy", [
    ("gpt_neox", {"rotary_pct": 0.5, "rotary_emb_base": 10000.0}),
    ("phi3", {"rope_scaling": {"type": "longrope", "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5],
                               "long_factor": [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]},
              "partial_rotary_factor": 0.75, "rope_theta": 10000.0}),
])
def test_a_transformers_4_config_writes_the_same_keys(tmp_path, saved, family, legacy):
    """Hub folders keep RoPE settings at the top level (rotary_pct, rope_scaling + rope_theta):
    the file must not change with the config's vintage."""
    import json
    import shutil

    new = GGUFModel(export(str(saved(family)), str(tmp_path / "new"), quant="f32").gguf)
    path = shutil.copytree(saved(family), tmp_path / "m")
    cfg = {k: v for k, v in json.loads((path / "config.json").read_text()).items() if k != "rope_parameters"}
    (path / "config.json").write_text(json.dumps({**cfg, **legacy}))
    old = GGUFModel(export(str(path), str(tmp_path / "old"), quant="f32").gguf)
    rope_keys = {k: v for k, v in new.kv.items() if ".rope." in k}
    assert rope_keys and {k: old.kv.get(k) for k in rope_keys} == rope_keys
    assert sorted(old.t) == sorted(new.t)


@pytest.mark.parametrize("family, output", [("llama", "output.weight"), ("gemma2", "token_embd.weight")])
def test_q4_0_keeps_the_output_projection_at_q8_0(tmp_path, saved, family, output):
    """As llama.cpp's quantizer keeps it higher: 4-bit logits are what drift first (gemma's tied
    embedding is its output)."""
    import gguf

    reader = gguf.GGUFReader(str(export(str(saved(family)), str(tmp_path / "out"), quant="q4_0").gguf))
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types[output] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q4_0
