"""A merged model directory -> one GGUF file, written with the `gguf` package (llama.cpp's own
writer library), for the families in export/families.py.

What llama.cpp's converter (convert_hf_to_gguf.py) does, and so this does too:
- the architecture and tensor names from gguf's own tables (MODEL_ARCH, get_tensor_name_map:
  model.layers.0.self_attn.q_proj.weight -> blk.0.attn_q.weight);
- each family's tensor changes and hyperparameter keys (export/families.py): q/k rows permuted to
  llama.cpp's interleaved pairs for NORM-RoPE architectures, Gemma's norms + 1, rope_freqs, ...;
- 1-D tensors and norms stay F32; other tensors take the requested type;
- a tied lm_head is left out (llama.cpp reuses token_embd);
- the byte-level BPE vocabulary as tokenizer.ggml.model "gpt2": tokens, token types (special
  added tokens CONTROL, other added tokens USER_DEFINED), merges, special ids, add_bos.
Tensors stream, as the converter's lazy tensors do: shapes come from the safetensors headers, then
each tensor is read, changed, quantized and written alone (peak memory: see benchmarks/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

from lmtune.errors import UserError
from lmtune.export.families import extra_tensors, family_of, neox_qkv_split, rope_params
from lmtune.export.gguf_vocab import add_tokenizer, guess_pre_tokenizer  # noqa: F401 (the tokenizer keys)

QUANTS = ("f32", "f16", "bf16", "q8_0", "q4_0")


def _types():
    import gguf

    q, f = gguf.GGMLQuantizationType, gguf.LlamaFileType
    return {"f32": (q.F32, f.ALL_F32), "f16": (q.F16, f.MOSTLY_F16), "bf16": (q.BF16, f.MOSTLY_BF16),
            "q8_0": (q.Q8_0, f.MOSTLY_Q8_0), "q4_0": (q.Q4_0, f.MOSTLY_Q4_0)}


def read_config(model_dir: Path) -> dict:
    """config.json, refused here (UserError) when llama.cpp cannot be given this family
    (export/families.py)."""
    cfg = json.loads((model_dir / "config.json").read_text())
    if "text_config" in cfg:  # a multimodal wrapper (Gemma 3 4B+): its text tensors sit under other names
        raise UserError(f"export --format gguf: model type {cfg.get('model_type')!r} is a multimodal model; "
                        "lmtune writes GGUF for text models only",
                        ["convert the merged folder with llama.cpp's convert_hf_to_gguf.py (text + mmproj)"])
    family_of(cfg)
    return cfg


def permute_rotary(w, n_head: int):
    """HF's rotate-half layout -> llama.cpp's interleaved pairs, per head (rows only)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def gguf_plan(model_dir: Path, cfg: dict) -> list[tuple[str, tuple[int, ...], object]]:
    """(gguf name, shape, source) for every tensor the file holds, in file order, read from the
    safetensors headers alone: source is (file, hf name) for a stored tensor, or the float32 array
    itself for the small ones generated from the config (rope_freqs, longrope factors)."""
    import gguf
    from safetensors import safe_open

    family = family_of(cfg)
    arch = gguf.MODEL_ARCH[family.arch]
    names = gguf.get_tensor_name_map(arch, cfg["num_hidden_layers"])
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise UserError(f"{model_dir}: no *.safetensors weights to export", ["merge or save the model with safetensors"])
    plan = []
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for hf_name in f.keys():
                if hf_name.endswith("rotary_emb.inv_freq"):
                    continue
                name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
                if name is None:
                    raise UserError(f"{file.name}: tensor {hf_name} has no GGUF name for a {cfg['model_type']} "
                                    f"model (llama.cpp architecture {gguf.MODEL_ARCH_NAMES[arch]})",
                                    ["is config.json's model_type the model these weights belong to?"])
                if name == "output.weight" and (cfg.get("tie_word_embeddings") or not family.untied_output):
                    continue  # llama.cpp reuses token_embd
                plan.append((name, tuple(f.get_slice(hf_name).get_shape()), (file, hf_name)))
    plan += [(name, data.shape, data) for name, data in extra_tensors(family, cfg)]
    return plan


def load_tensor(source, cfg: dict):
    """One tensor as float32 in GGUF row layout. The file is opened (memory-mapped) for this
    tensor alone, so the pages read stay mapped only while it is copied out. Read through torch:
    numpy has no bfloat16, the dtype most checkpoints are saved in."""
    import torch
    from safetensors import safe_open

    if not isinstance(source, tuple):
        return source
    file, hf_name = source
    with safe_open(str(file), framework="pt") as f:
        tensor = f.get_tensor(hf_name)
    data = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy().astype("float32")
    del tensor
    return _transform(family_of(cfg), cfg, hf_name, data)


def _transform(family, cfg: dict, hf_name: str, data):
    """One tensor as llama.cpp's converter stores it for this family (export/families.py)."""
    n_head = cfg["num_attention_heads"]
    if family.interleaved and hf_name.endswith(("q_proj.weight", "q_proj.bias")):
        return permute_rotary(data, n_head)
    if family.interleaved and hf_name.endswith(("k_proj.weight", "k_proj.bias")):
        return permute_rotary(data, cfg.get("num_key_value_heads") or n_head)
    if family.norm_plus_one and hf_name.endswith("norm.weight"):
        return data + 1
    if family.neox_qkv and hf_name.endswith(("query_key_value.weight", "query_key_value.bias")):
        return neox_qkv_split(data, n_head)
    return data


def check_quant(shapes: list[tuple[str, tuple[int, ...]]], quant: str) -> None:
    """Block quants need every quantized row length to be a multiple of their block size."""
    import gguf

    qtype = _types()[quant][0]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    bad = [f"{n} (rows of {s[-1]})" for n, s in shapes if len(s) > 1 and s[-1] % block]
    if bad:
        raise UserError(f"--quant {quant}: {len(bad)} tensors have rows that are not a multiple of {block}, "
                        f"which {quant} needs: {', '.join(bad[:3])}", ["use --quant f16 or f32 for this model"])


def tensor_type(name: str, shape: tuple[int, ...], quant: str, output_name: str = "output.weight"):
    """1-D tensors and norms F32; under q4_0 the output projection (token_embd when tied) q8_0,
    as llama.cpp's own quantizer keeps it at a higher type (q6_K, which gguf cannot write)."""
    qtype = _types()[quant][0]
    import gguf

    if len(shape) <= 1 or name.endswith("_norm.weight"):
        return gguf.GGMLQuantizationType.F32
    if quant == "q4_0" and name == output_name:
        return gguf.GGMLQuantizationType.Q8_0
    return qtype


def write_gguf(model_dir: Path, out_file: Path, quant: str, chat_template: str, stops: list[str],
               name: str, pre_tokenizer: str | None = None) -> dict:
    """Write the GGUF to out_file (the caller renames it into place). Returns a summary.
    Tensors stream: their infos come from the safetensors headers, then each one is loaded,
    transformed, quantized and written alone, so no second copy of the weights is ever held."""
    import gguf

    cfg = read_config(model_dir)
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[family_of(cfg).arch]]
    plan = gguf_plan(model_dir, cfg)
    check_quant([(n, s) for n, s, _ in plan], quant)
    writer = gguf.GGUFWriter(str(out_file), arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(_name_llama_cpp_loads(name, model_dir))
    _hyperparameters(writer, cfg, _types()[quant][1])
    tokenizer_summary = add_tokenizer(writer, model_dir, cfg, chat_template, stops, pre_tokenizer)
    output = "output.weight" if any(n == "output.weight" for n, _, _ in plan) else "token_embd.weight"
    qtypes = [tensor_type(n, s, quant, output) for n, s, _ in plan]
    for (tname, shape, _), qtype in zip(plan, qtypes):
        _add_info(writer, tname, shape, qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for (_, _, source), qtype in zip(plan, qtypes):
        writer.write_tensor_data(_quantize_rows(load_tensor(source, cfg), qtype))
    writer.close()
    return {"tensors": len(plan), "architecture": arch, **tokenizer_summary}


def _add_info(writer, name: str, shape: tuple[int, ...], qtype) -> None:
    """The tensor info GGUFWriter.add_tensor would record for gguf.quants.quantize's output."""
    import math

    import gguf
    import numpy as np

    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        dtype = np.float32 if qtype == gguf.GGMLQuantizationType.F32 else np.float16
        writer.add_tensor_info(name, shape, dtype, math.prod(shape) * np.dtype(dtype).itemsize, raw_dtype=qtype)
    else:  # block types come out of quantize as uint8 rows
        byte_shape = gguf.quants.quant_shape_to_byte_shape(shape, qtype)
        writer.add_tensor_info(name, byte_shape, np.uint8, math.prod(byte_shape), raw_dtype=qtype)


def _quantize_rows(data, qtype, rows_per_chunk_elems: int = 1 << 24):
    """gguf.quants.quantize, a few rows at a time into one output array: quantizing works per
    row, so the bytes are the same, and its float temporaries stay the size of one chunk."""
    import gguf
    import numpy as np

    if data.ndim < 2 or data.size <= rows_per_chunk_elems:
        return gguf.quants.quantize(data, qtype)
    rows = data.reshape(-1, data.shape[-1])
    step = max(1, rows_per_chunk_elems // data.shape[-1])
    first = gguf.quants.quantize(rows[:step], qtype)
    out = np.empty((rows.shape[0], first.shape[-1]), dtype=first.dtype)
    out[:step] = first
    for i in range(step, rows.shape[0], step):
        out[i:i + step] = gguf.quants.quantize(rows[i:i + step], qtype)
    return out.reshape(*data.shape[:-1], first.shape[-1])


def _name_llama_cpp_loads(name: str, model_dir: Path) -> str:
    """general.name as llama.cpp must read it: a name with "phi3" or "phi-3" makes llama.cpp strip
    the whitespace after every special token but <unk>, <s>, <|endoftext|> (and stop on a vocabulary
    without </s>, <unk>, <s>, <|endoftext|>), so the name says phi3 exactly when the tokenizer strips
    that way itself (gguf_vocab.strips_like_phi3): "phi 3" otherwise, " (phi3)" added when needed."""
    import re

    from transformers import AutoTokenizer

    from lmtune.export.gguf_vocab import strips_like_phi3

    phi3 = re.compile(r"(phi)-?(3)", re.IGNORECASE)
    if strips_like_phi3(AutoTokenizer.from_pretrained(str(model_dir))):
        return name if phi3.search(name) else f"{name} (phi3)"
    return phi3.sub(r"\1 \2", name)


def _hyperparameters(writer, cfg: dict, file_type) -> None:
    """The keys every family shares (as the converter's TextModel and LlamaModel write them),
    then the family's own (export/families.py)."""
    import gguf

    n_head = cfg["num_attention_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    rope = rope_params(cfg)
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(cfg.get("num_key_value_heads") or n_head)
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    if (swa_theta := rope_params(cfg, "sliding_attention").get("rope_theta")) is not None:
        writer.add_rope_freq_base_swa(float(swa_theta))
    _rope_scaling(writer, rope)
    if "layer_norm_eps" in cfg:
        writer.add_layer_norm_eps(float(cfg["layer_norm_eps"]))
    else:
        writer.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    writer.add_vocab_size(cfg["vocab_size"])
    writer.add_rope_dimension_count(int(rope.get("partial_rotary_factor", 1.0) * head_dim))
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    family_of(cfg).hparams(writer, cfg)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _rope_scaling(writer, rope: dict) -> None:
    """linear and yarn as keys (TextModel.set_gguf_parameters); llama3 is the rope_freqs tensor."""
    import gguf

    kind, factor = rope["rope_type"], rope.get("factor")
    if kind == "linear" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(factor))
    elif kind == "yarn" and factor is not None:
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(factor))
        writer.add_rope_scaling_orig_ctx_len(int(rope["original_max_position_embeddings"]))
        for key, add in (("extrapolation_factor", writer.add_rope_scaling_yarn_ext_factor),
                         ("attention_factor", writer.add_rope_scaling_yarn_attn_factor),
                         ("beta_fast", writer.add_rope_scaling_yarn_beta_fast),
                         ("beta_slow", writer.add_rope_scaling_yarn_beta_slow)):
            if rope.get(key) is not None:
                add(float(rope[key]))

