"""`lmtune export --format gguf`: read the file back with gguf.GGUFReader and check every tensor
against the (merged) weights, the layout llama.cpp expects, the tokenizer and the output rules."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch

from lmtune.cli import main as cli
from lmtune.models import resolve_model_path
from lmtune.export import export
from tiny_models import save_tiny_model

HF_NAME = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head",
           "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
           "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
           "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}


def _hf_name(gguf_name: str) -> str:
    stem = gguf_name.removesuffix(".weight")
    if stem.startswith("blk."):
        _, layer, part = stem.split(".", 2)
        return f"model.layers.{layer}.{HF_NAME[part]}.weight"
    return f"{HF_NAME[stem]}.weight"


def _interleaved(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's rope layout, written independently of the exporter: within each head, row 2i is
    HF row i and row 2i+1 is HF row i + head_dim/2."""
    hd = w.shape[0] // heads
    out = np.empty_like(w)
    for h in range(heads):
        out[h * hd:(h + 1) * hd:2] = w[h * hd:h * hd + hd // 2]
        out[h * hd + 1:(h + 1) * hd:2] = w[h * hd + hd // 2:(h + 1) * hd]
    return out


def _expected(state: dict, cfg, name: str) -> np.ndarray:
    w = state[_hf_name(name)].float().numpy()
    if ".attn_q." in name:
        return _interleaved(w, cfg.num_attention_heads)
    if ".attn_k." in name:
        return _interleaved(w, cfg.num_key_value_heads)
    return w


def _check_tensors(path, state, cfg, quant):
    reader = gguf.GGUFReader(str(path))
    names = {t.name for t in reader.tensors}
    assert len(names) == len([k for k in state if not (cfg.tie_word_embeddings and k == "lm_head.weight")])
    for t in reader.tensors:
        want = _expected(state, cfg, t.name)
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(want.shape)
        if want.ndim == 1 or t.name.endswith("_norm.weight") or quant == "f32":
            assert t.tensor_type == gguf.GGMLQuantizationType.F32 and np.array_equal(got, want), t.name
        elif quant == "f16":
            assert np.array_equal(got, want.astype(np.float16).astype(np.float32)), t.name
        else:  # block quants, per 32-block: step = |max| / levels; error <= half a step (q8_0) or a
            # whole one (q4_0's -8..7 range clips the side opposite the max), plus the fp16 scale's rounding
            levels, steps = {"q8_0": (127, 0.5), "q4_0": (8, 1.0)}[quant]
            blocks, approx = want.reshape(-1, 32), got.reshape(-1, 32)
            step = np.abs(blocks).max(axis=1, keepdims=True) / levels
            assert (np.abs(approx - blocks) <= step * (steps + levels * 2**-10) + 1e-8).all(), t.name
            assert not np.array_equal(approx, blocks)  # really quantized
    return reader


@pytest.fixture(scope="module")
def tiny_state():
    from transformers import AutoConfig
    from safetensors.torch import load_file

    base = resolve_model_path("tiny")
    return load_file(f"{base}/model.safetensors"), AutoConfig.from_pretrained(base)


@pytest.mark.parametrize("quant", ["f32", "f16", "q8_0", "q4_0"])
def test_tiny_base_tensors_read_back(tmp_path, tiny_state, quant):
    state, cfg = tiny_state
    res = export("tiny", str(tmp_path / "out"), quant=quant)
    reader = _check_tensors(res.gguf, state, cfg, quant)
    f = {k: v.contents() for k, v in reader.fields.items() if not k.startswith("GGUF.")}
    assert f["general.architecture"] == "llama" and f["llama.block_count"] == cfg.num_hidden_layers
    assert (f["llama.embedding_length"], f["llama.feed_forward_length"], f["llama.context_length"]) == \
        (cfg.hidden_size, cfg.intermediate_size, cfg.max_position_embeddings)
    assert (f["llama.attention.head_count"], f["llama.attention.head_count_kv"]) == \
        (cfg.num_attention_heads, cfg.num_key_value_heads)
    assert f["llama.attention.layer_norm_rms_epsilon"] == pytest.approx(cfg.rms_norm_eps)
    with open(resolve_model_path("tiny") + "/tokenizer.json", encoding="utf-8") as fh:
        tok = json.load(fh)
    vocab = {i: t for t, i in tok["model"]["vocab"].items()}
    assert f["tokenizer.ggml.model"] == "gpt2"
    assert f["tokenizer.ggml.tokens"] == [vocab[i] for i in range(cfg.vocab_size)]
    assert f["tokenizer.ggml.merges"] == [" ".join(m) for m in tok["model"]["merges"]]
    types = f["tokenizer.ggml.token_type"]
    assert types[:4] == [gguf.TokenType.CONTROL] * 4 and set(types[4:]) == {gguf.TokenType.NORMAL}
    assert (f["tokenizer.ggml.eos_token_id"], f["tokenizer.ggml.padding_token_id"]) == (1, 0)
    assert f["tokenizer.ggml.add_bos_token"] is False


def test_adapter_is_merged_before_export(tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = save_tiny_model(tmp_path / "base", "llama")
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                           LoraConfig(r=4, target_modules=["q_proj", "k_proj", "down_proj"], init_lora_weights=False))
    model.save_pretrained(str(tmp_path / "adapter"))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(tmp_path / "adapter"))
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)),
                                       str(tmp_path / "adapter")).merge_and_unload()
    state = {k: v.detach() for k, v in merged.state_dict().items()}
    res = export(str(tmp_path / "adapter"), str(tmp_path / "out"), quant="f32")
    reader = gguf.GGUFReader(str(res.gguf))
    assert len(reader.tensors) == len(state)  # untied: lm_head is output.weight
    for t in reader.tensors:  # the merge path rounds like peft's merge: equal to fp32 precision
        want = _expected(state, merged.config, t.name)
        np.testing.assert_allclose(np.asarray(t.data).reshape(want.shape), want, atol=1e-6, rtol=0)
    base_q = AutoModelForCausalLM.from_pretrained(str(base)).state_dict()["model.layers.0.self_attn.q_proj.weight"]
    assert not torch.allclose(state["model.layers.0.self_attn.q_proj.weight"], base_q)  # the adapter counted
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Modelfile", "chat_template.jinja", "model-f32.gguf"]


def test_bad_input_exits_2_and_out_dir_rules(tmp_path, capsys):
    gpt2 = save_tiny_model(tmp_path / "gpt2", "gpt2")
    assert cli(["export", str(gpt2), "--out", str(tmp_path / "o1")]) == 2
    assert "model type 'gpt2' is not supported" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists()  # refused before any folder is made

    from transformers import LlamaConfig, LlamaForCausalLM

    odd = tmp_path / "odd"  # rows of 40: no multiple of the 32-wide q8_0/q4_0 blocks
    cfg = LlamaConfig(vocab_size=320, hidden_size=40, intermediate_size=72, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(cfg).save_pretrained(str(odd))
    from tiny_models import build_tokenizer

    build_tokenizer().save_pretrained(str(odd))
    assert cli(["export", str(odd), "--quant", "q8_0", "--out", str(tmp_path / "o2")]) == 2
    assert "not a multiple of 32" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()  # the folder export made is removed with the failure

    out = tmp_path / "o3"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli(["export", str(odd), "--quant", "f16", "--out", str(out)]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert cli(["export", str(odd), "--quant", "f16", "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "chat_template.jinja", "model-f16.gguf", "notes.txt"]
    assert (out / "notes.txt").read_text() == "mine"
