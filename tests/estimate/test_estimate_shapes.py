"""lmtune/estimate/shapes.py, number by number: resolving --model (presets, Hub aliases, 'tiny',
directories, files, the Hub cache) and what is read off a tiny real model of each family on the meta
device. The counts below are worked out by hand from the tiny configs in tests/helpers/estimate_helpers.py."""

from __future__ import annotations

import json

import pytest

from estimate_helpers import TINY
from lmtune.errors import UserError
from lmtune.estimate import shapes
from lmtune.estimate.shapes import (LinearInfo, ModelShape, model_reference, preset_names, resolve_config,
                                    shape_from_config)

# Imported here, not only where used: a mutation run forks every mutant's tests from one process
# that collected this module, so these imports are paid once.
import transformers.models.gemma2.modeling_gemma2  # noqa: E402,F401
import transformers.models.bloom.modeling_bloom  # noqa: E402,F401
import transformers.models.gemma3.modeling_gemma3  # noqa: E402,F401
import transformers.models.nemotron.modeling_nemotron  # noqa: E402,F401
import transformers.models.gpt2.modeling_gpt2  # noqa: E402,F401
import transformers.models.llama.modeling_llama  # noqa: E402,F401
import transformers.models.phi.modeling_phi  # noqa: E402,F401
import transformers.models.phi3.modeling_phi3  # noqa: E402,F401
from transformers import AutoConfig, AutoModelForCausalLM  # noqa: E402,F401

PRESETS = ["gemma-2-9b", "gemma-3-1b", "gemma-3-4b", "llama-2-13b", "llama-2-70b", "llama-2-7b",
           "llama-3.1-70b", "llama-3.1-8b", "llama-3.2-1b", "llama-3.2-3b", "mistral-7b-v0.1", "phi-3-mini",
           "phi-4-mini", "qwen2.5-0.5b", "qwen2.5-1.5b", "qwen2.5-14b", "qwen2.5-32b", "qwen2.5-3b",
           "qwen2.5-72b", "qwen2.5-7b", "qwen3-0.6b", "qwen3-1.7b", "qwen3-4b", "qwen3-8b", "smollm3-3b"]
HINT = ["presets: " + ", ".join(PRESETS), "or a local directory holding config.json, or 'tiny' (the embedded base)"]


# ---------------------------------------------------------------- small pieces

def test_linear_and_shape_properties():
    assert LinearInfo("x", 3, 5, 0).weight_params == 15
    shape = ModelShape("s", "llama", 0, num_layers=2, hidden=32, heads=4, kv_heads=2, head_dim=16,
                       intermediate=0, vocab=0, tied=False, embed_params=0, linears=[],
                       param_shapes=[("model.embed_tokens.weight", (10, 4)), ("model.layers.0.a.weight", (3, 4)),
                                     ("model.layers.1.a.weight", (3, 4)), ("model.layers.1.b", (5,)),
                                     ("model.norm.weight", (4,))])
    assert (shape.q_width, shape.kv_width) == (64, 32)
    assert shape.layer_params() == (12 + 12 + 5) // 2   # only the parameters inside the layers
    no_layers = ModelShape("s", "x", 0, 0, 1, 1, 1, 1, 1, 1, False, 0, [], [("h.0.w", (7,))])
    assert no_layers.layer_params() == 7               # never a division by zero


def test_layer_index_needs_a_number_between_dots():
    assert shapes._layer_of("model.layers.12.mlp.up_proj") == 12
    assert shapes._layer_of("transformer.h.0.attn") == 0
    assert shapes._layer_of("lm_head") is None and shapes._layer_of("model.layers.3") is None
    assert shapes._numel((2, 3, 4)) == 24 and shapes._numel(()) == 1


def test_model_reference_names_the_hub_id_of_a_preset():
    assert model_reference("qwen2.5-7b") == "Qwen/Qwen2.5-7B"
    assert model_reference("QWEN2.5-7B") == "Qwen/Qwen2.5-7B"
    assert model_reference("Meta-Llama/Llama-3.1-8B-Instruct") == "meta-llama/Llama-3.1-8B"
    assert model_reference("Acme/My-Model") == "Acme/My-Model"   # not a preset: as the user wrote it


def test_preset_names_and_places():
    assert preset_names() == PRESETS
    assert shapes.preset_dir().parts[-3:] == ("lmtune", "presets", "models")
    assert shapes._embedded_tiny().parts[-4:] == ("lmtune", "assets", "base", "tiny")


# ---------------------------------------------------------------- resolving --model

def test_resolve_a_preset_by_name_or_hub_alias():
    raw, where = resolve_config(" Qwen2.5-0.5B ")
    assert where == "preset qwen2.5-0.5b" and raw["hidden_size"] == 896 and raw["model_type"] == "qwen2"
    raw, where = resolve_config("Qwen/Qwen2.5-0.5B")
    assert where == "preset qwen2.5-0.5b" and raw["num_hidden_layers"] == 24


def test_resolve_the_embedded_tiny_base(monkeypatch, tmp_path):
    raw, where = resolve_config("tiny")
    assert where == "embedded tiny base"
    assert raw == json.loads((shapes._embedded_tiny() / "config.json").read_text())
    monkeypatch.setattr(shapes, "_embedded_tiny", lambda: tmp_path / "missing")
    with pytest.raises(UserError) as err:
        resolve_config("tiny")
    assert err.value.render() == ("error: the embedded base 'tiny' is not built in this checkout\n"
                                  "  build it with `python scripts/build_base.py`, or pass a preset: "
                                  + ", ".join(PRESETS))


def test_resolve_a_directory_or_a_file(tmp_path, monkeypatch):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(TINY["llama"]))
    assert resolve_config(str(tmp_path / "m")) == (TINY["llama"], str(tmp_path / "m" / "config.json"))
    assert resolve_config(str(tmp_path / "m" / "config.json")) == (TINY["llama"], str(tmp_path / "m" / "config.json"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_config("~/m")[1] == str(tmp_path / "m" / "config.json")
    (tmp_path / "bad.json").write_text('{\n  "model_type": "llama",\n  oops\n}')
    with pytest.raises(UserError) as err:
        resolve_config(str(tmp_path / "bad.json"))
    assert err.value.render() == f"error: {tmp_path / 'bad.json'}:3: not valid JSON (Expecting property name " \
                                 "enclosed in double quotes)"


def test_resolve_from_the_hub_cache_only(tmp_path, monkeypatch):
    from huggingface_hub import constants

    snapshot = tmp_path / "models--acme--tiny" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(TINY["gpt2"]))
    (tmp_path / "models--acme--tiny" / "refs").mkdir()
    (tmp_path / "models--acme--tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert resolve_config("acme/tiny") == (TINY["gpt2"], "hub acme/tiny")
    with pytest.raises(UserError) as err:
        resolve_config("acme/absent")
    assert err.value.args[0] == "--model acme/absent: cannot read its config.json from the Hub " \
                                "(LocalEntryNotFoundError)"
    assert err.value.problems == HINT
    with pytest.raises(UserError) as err:
        resolve_config("nothing-here")
    assert err.value.args[0] == "--model 'nothing-here': not a preset, a directory or a Hub id (owner/name)"
    assert err.value.problems == HINT


# ---------------------------------------------------------------- shapes on the meta device

def _linears(shape, layer):
    return [(lin.name.rsplit(".", 1)[-1], lin.in_features, lin.out_features, lin.conv1d, lin.bias, lin.is_head)
            for lin in shape.linears if lin.layer == layer]


def test_llama_shape():
    s = shape_from_config({**TINY["llama"], "auto_map": {"AutoModelForCausalLM": "remote.Model"}}, "here")
    assert (s.source, s.model_type, s.num_layers, s.hidden, s.heads, s.kv_heads, s.head_dim, s.intermediate,
            s.vocab, s.tied) == ("here", "llama", 2, 32, 4, 2, 8, 88, 128, False)
    # embedding 128x32; a layer: q 32x32, k and v 32x16, o 32x32, gate/up/down 32x88, two norms of 32
    assert s.embed_params == 4096 and s.layer_params() == 1024 + 512 + 512 + 1024 + 3 * 2816 + 64
    assert s.total_params == 4096 + 2 * 11584 + 32 + 4096    # + final norm + untied lm_head
    assert _linears(s, 0) == [("q_proj", 32, 32, False, 0, False), ("k_proj", 32, 16, False, 0, False),
                              ("v_proj", 32, 16, False, 0, False), ("o_proj", 32, 32, False, 0, False),
                              ("gate_proj", 32, 88, False, 0, False), ("up_proj", 32, 88, False, 0, False),
                              ("down_proj", 88, 32, False, 0, False)]
    assert _linears(s, None) == [("lm_head", 32, 128, False, 0, True)] and len(_linears(s, 1)) == 7
    assert (s.family, s.norms_per_layer, s.fused_qkv, s.attn_impl) == ("llama", 2, False, "sdpa")
    assert (s.attention_dropout, s.hidden_dropout, s.final_logit_softcapping) == (0.0, 0.0, None)
    assert s.extra == {"hidden_act": "silu"}
    assert s.param_shapes[0] == ("model.embed_tokens.weight", (128, 32)) and s.param_shapes[-1] == (
        "lm_head.weight", (128, 32))


def test_llama_with_its_own_head_dim_dropout_and_tied_embeddings():
    s = shape_from_config({**TINY["llama"], "head_dim": 16, "attention_dropout": 0.25, "tie_word_embeddings": True})
    assert (s.source, s.head_dim, s.q_width, s.kv_width, s.attention_dropout) == ("config", 16, 64, 32, 0.25)
    assert s.tied and s.total_params == 4096 + 2 * (2 * 2048 + 2 * 1024 + 3 * 2816 + 64) + 32   # head counted once
    assert _linears(s, None) == [("lm_head", 32, 128, False, 0, True)]


def test_gpt2_shape():
    s = shape_from_config(TINY["gpt2"], "g")
    assert (s.model_type, s.hidden, s.heads, s.kv_heads, s.head_dim, s.intermediate, s.tied) == (
        "gpt2", 32, 4, 4, 8, 128, True)   # no n_inner: 4 x hidden
    # Conv1D weights are (in, out); every one has a bias
    assert _linears(s, 0) == [("c_attn", 32, 96, True, 96, False), ("c_proj", 32, 32, True, 32, False),
                              ("c_fc", 32, 128, True, 128, False), ("c_proj", 128, 32, True, 32, False)]
    assert s.embed_params == 4096 + 4096   # token and learned position embeddings
    assert s.layer_params() == 64 + 3168 + 1056 + 64 + 4224 + 4128
    assert s.total_params == 8192 + 2 * 12704 + 64
    assert (s.family, s.norms_per_layer, s.fused_qkv) == ("generic", 2, False)
    assert (s.attention_dropout, s.hidden_dropout) == (0.1, 0.1) and s.extra == {"hidden_act": "gelu_new"}
    inner = shape_from_config({**TINY["gpt2"], "n_inner": 48, "attn_pdrop": 0.0, "resid_pdrop": 0.0})
    assert inner.intermediate == 48 and (inner.attention_dropout, inner.hidden_dropout) == (0.0, 0.0)


def test_phi_families_fused_and_not():
    phi = shape_from_config(TINY["phi"])
    assert (phi.family, phi.norms_per_layer, phi.fused_qkv) == ("generic", 1, False)   # one shared layernorm
    assert _linears(phi, None) == [("lm_head", 32, 128, False, 128, True)]
    assert phi.extra == {"hidden_act": "gelu_new"}
    phi3 = shape_from_config({**TINY["phi3"], "resid_pdrop": 0.2})
    assert (phi3.family, phi3.norms_per_layer, phi3.fused_qkv, phi3.hidden_dropout) == ("llama", 2, True, 0.2)
    assert [n for n, *_ in _linears(phi3, 0)] == ["o_proj", "qkv_proj", "gate_up_proj", "down_proj"]
    # the family is read off the first layer, which a one-layer model has too
    one = shape_from_config({**TINY["phi3"], "num_hidden_layers": 1})
    assert (one.family, one.fused_qkv, one.norms_per_layer) == ("llama", True, 2)
    assert shape_from_config({**TINY["llama"], "num_hidden_layers": 1}).family == "llama"


def test_an_ungated_mlp_and_a_fixed_four_times_width():
    # Nemotron's MLP is up_proj -> relu^2 -> down_proj: a down_proj without a gate is not the llama family
    nemo = shape_from_config({"model_type": "nemotron", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 48,
                              "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
                              "head_dim": 8})
    assert (nemo.family, nemo.intermediate) == ("generic", 48)
    # BLOOM's config names no MLP width (neither intermediate_size nor n_inner): it is 4 x hidden
    bloom = shape_from_config({"model_type": "bloom", "vocab_size": 128, "hidden_size": 32, "n_layer": 2, "n_head": 4,
                               "hidden_dropout": 0.125, "attention_dropout": 0.25})
    assert (bloom.family, bloom.intermediate) == ("generic", 128)
    assert (bloom.hidden_dropout, bloom.attention_dropout) == (0.125, 0.25)   # named as in Llama, not GPT-2
    assert [n for n, *_ in _linears(bloom, 0)] == ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"]


def test_gemma2_norms_softcapping_and_attention():
    s = shape_from_config({"model_type": "gemma2", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64,
                           "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2,
                           "head_dim": 16, "final_logit_softcapping": 30.0})
    assert (s.family, s.norms_per_layer, s.head_dim, s.final_logit_softcapping) == ("llama", 4, 16, 30.0)
    assert s.attn_impl == "eager"   # transformers picks eager for gemma2's soft-capped attention


def test_a_multimodal_config_is_read_through_its_text_config():
    text = {"model_type": "gemma3_text", "vocab_size": 128, "hidden_size": 32, "intermediate_size": 64,
            "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "head_dim": 8}
    s = shape_from_config({"model_type": "gemma3", "text_config": text, "mm_tokens_per_image": 4,
                           "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                                             "num_attention_heads": 2, "image_size": 28, "patch_size": 14}})
    assert (s.model_type, s.num_layers, s.hidden, s.heads, s.kv_heads, s.intermediate, s.vocab) == (
        "gemma3_text", 2, 32, 4, 2, 64, 128)


def test_unknown_types_and_models_that_do_not_generate():
    with pytest.raises(UserError) as err:
        shape_from_config({"model_type": "nope", "hidden_size": 8}, "x.json")
    assert err.value.args[0].startswith("x.json: transformers cannot build a config for model_type 'nope' (")
    assert err.value.problems == ["estimate supports architectures that ship with transformers"]
    with pytest.raises(UserError) as err:
        shape_from_config({"model_type": "t5", "vocab_size": 32, "d_model": 8, "num_layers": 1, "num_heads": 2,
                           "d_kv": 4, "d_ff": 16}, "t5.json")
    assert err.value.args[0].startswith("t5.json: 't5' is not a causal language model (")
