"""A merged Llama-family model directory -> one GGUF file, written with the `gguf` package
(llama.cpp's own writer library).

What llama.cpp's converter (convert_hf_to_gguf.py, class LlamaModel) does, and so this does too:
- tensor names from gguf's own name map (model.layers.0.self_attn.q_proj.weight -> blk.0.attn_q.weight);
- q_proj and k_proj rows permuted from the HF rotary layout (the two halves of each head) to
  llama.cpp's interleaved pairs: reshape(heads, 2, head_dim/2, in).swapaxes(1, 2);
- 1-D tensors and norms stay F32; other tensors take the requested type;
- a tied lm_head is left out (llama.cpp reuses token_embd);
- the byte-level BPE vocabulary as tokenizer.ggml.model "gpt2": tokens, token types (special
  added tokens CONTROL, other added tokens USER_DEFINED), merges, special ids, add_bos.
"""

from __future__ import annotations

import json
from pathlib import Path

from lmtune.errors import UserError
from lmtune.export.gguf_vocab import add_tokenizer, guess_pre_tokenizer  # noqa: F401 (the tokenizer keys)

QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0")
SUPPORTED_MODEL_TYPES = ("llama", "mistral")  # both are llama.cpp's LLM_ARCH_LLAMA


def _types():
    import gguf

    q, f = gguf.GGMLQuantizationType, gguf.LlamaFileType
    return {"f32": (q.F32, f.ALL_F32), "f16": (q.F16, f.MOSTLY_F16), "bf16": (q.BF16, f.MOSTLY_BF16),
            "q8_0": (q.Q8_0, f.MOSTLY_Q8_0), "q4_0": (q.Q4_0, f.MOSTLY_Q4_0)}


def read_config(model_dir: Path) -> dict:
    cfg = json.loads((model_dir / "config.json").read_text())
    cfg = {**cfg, **cfg.get("text_config", {})}
    if cfg.get("model_type") not in SUPPORTED_MODEL_TYPES:
        raise UserError(f"export --format gguf: model type {cfg.get('model_type')!r} is not supported "
                        f"(lmtune writes GGUF for {', '.join(SUPPORTED_MODEL_TYPES)})",
                        ["merge the run (lmtune merge) and convert the merged folder with llama.cpp's "
                         "convert_hf_to_gguf.py, which knows more architectures"])
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) not in ("default", None):
        raise UserError(f"export --format gguf: RoPE scaling {rope.get('rope_type', rope.get('type'))!r} "
                        "is not supported by lmtune's writer",
                        ["convert the merged folder with llama.cpp's convert_hf_to_gguf.py"])
    if cfg.get("sliding_window"):
        raise UserError("export --format gguf: sliding-window attention is not supported by lmtune's writer",
                        ["convert the merged folder with llama.cpp's convert_hf_to_gguf.py"])
    return cfg


def permute_rotary(w, n_head: int):
    """HF's rotate-half layout -> llama.cpp's interleaved pairs, per head (rows only)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_tensors(model_dir: Path, cfg: dict):
    """(gguf name, float32 array in GGUF row layout) for every tensor the file holds."""
    import gguf
    from safetensors.numpy import load_file

    n_layers, n_head = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_head
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layers)
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir}: no *.safetensors weights to export", ["merge or save the model with safetensors"])
    for file in files:
        for hf_name, array in load_file(str(file)).items():
            if hf_name == "lm_head.weight" and cfg.get("tie_word_embeddings"):
                continue
            if hf_name.endswith("rotary_emb.inv_freq"):
                continue
            name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if name is None:
                raise UserError(f"{file.name}: tensor {hf_name} has no GGUF name for a Llama model",
                                ["is this a Llama-architecture model?"])
            data = array.astype("float32") if array.dtype.kind == "f" else _bf16_to_f32(array)
            if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
                data = permute_rotary(data, n_head)
            elif hf_name.endswith(("k_proj.weight", "k_proj.bias")):
                data = permute_rotary(data, n_kv)
            yield name, data


def _bf16_to_f32(array):
    import numpy as np

    return (array.view(np.uint16).astype(np.uint32) << 16).view(np.float32)


def check_quant(tensors: list[tuple[str, object]], quant: str) -> None:
    """Block quants need every quantized row length to be a multiple of their block size."""
    import gguf

    qtype = _types()[quant][0]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    bad = [f"{n} (rows of {a.shape[-1]})" for n, a in tensors if a.ndim > 1 and a.shape[-1] % block]
    if bad:
        raise UserError(f"--quant {quant}: {len(bad)} tensors have rows that are not a multiple of {block}, "
                        f"which {quant} needs: {', '.join(bad[:3])}", ["use --quant f16 or f32 for this model"])


def tensor_type(name: str, array, quant: str):
    qtype = _types()[quant][0]
    import gguf

    if array.ndim <= 1 or name.endswith("_norm.weight"):
        return gguf.GGMLQuantizationType.F32
    return qtype


def write_gguf(model_dir: Path, out_file: Path, quant: str, chat_template: str, stops: list[str],
               name: str, pre_tokenizer: str | None = None) -> dict:
    """Write the GGUF to out_file (the caller renames it into place). Returns a summary."""
    import gguf

    cfg = read_config(model_dir)
    tensors = list(gguf_tensors(model_dir, cfg))
    check_quant(tensors, quant)
    writer = gguf.GGUFWriter(str(out_file), gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    _hyperparameters(writer, cfg, _types()[quant][1])
    tokenizer_summary = add_tokenizer(writer, model_dir, cfg, chat_template, stops, pre_tokenizer)
    for tname, data in tensors:
        qtype = tensor_type(tname, data, quant)
        writer.add_tensor(tname, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return {"tensors": len(tensors), **tokenizer_summary}


def _hyperparameters(writer, cfg: dict, file_type) -> None:
    import gguf

    n_head = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(cfg.get("num_key_value_heads") or n_head)
    rope = cfg.get("rope_parameters") or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", cfg.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(cfg["vocab_size"])
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
