"""The GGUF writer streams tensors (export/gguf_file.py): big tensors are quantized a few rows at
a time, and a model split over several safetensors files exports like the same model in one."""

from __future__ import annotations

import hashlib

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from lmtune.export import export
from lmtune.export.gguf_file import _quantize_rows
from tiny_families import save_family_model


@pytest.mark.parametrize("qtype", [gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0,
                                   gguf.GGMLQuantizationType.BF16, gguf.GGMLQuantizationType.F16])
def test_chunked_quantization_gives_the_same_bytes(qtype):
    data = np.random.default_rng(0).standard_normal((3, 37, 64)).astype(np.float32)
    want = gguf.quants.quantize(data, qtype)
    got = _quantize_rows(data, qtype, rows_per_chunk_elems=5 * 64)  # 5 rows a chunk: the last one short
    assert got.shape == want.shape and got.dtype == want.dtype
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))


def test_sharded_weights_export_like_one_file(tmp_path):
    one = save_family_model(tmp_path / "one", "llama")
    two = save_family_model(tmp_path / "two", "llama")
    (file,) = two.glob("*.safetensors")
    tensors = load_file(str(file))
    names = sorted(tensors)
    file.unlink()
    save_file({n: tensors[n] for n in names[: len(names) // 2]}, str(two / "model-00001-of-00002.safetensors"))
    save_file({n: tensors[n] for n in names[len(names) // 2:]}, str(two / "model-00002-of-00002.safetensors"))
    a = export(str(one), str(tmp_path / "a"), quant="q8_0").gguf
    b = export(str(two), str(tmp_path / "b"), quant="q8_0").gguf
    assert _tensor_bytes(a) == _tensor_bytes(b)


def _tensor_bytes(path):
    reader = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type, hashlib.sha256(t.data.tobytes()).hexdigest()) for t in reader.tensors}


def test_bf16_weights_export_their_exact_values(tmp_path):
    """numpy has no bfloat16: the weights are read through torch, and bf16 -> f32 is exact."""
    import torch
    from safetensors.torch import load_file as load_pt, save_file as save_pt

    path = save_family_model(tmp_path / "m", "llama")
    (file,) = path.glob("*.safetensors")
    bf16 = {n: t.to(torch.bfloat16) for n, t in load_pt(str(file)).items()}
    save_pt(bf16, str(file), metadata={"format": "pt"})
    reader = gguf.GGUFReader(export(str(path), str(tmp_path / "out"), quant="f32").gguf)
    got = {t.name: np.asarray(t.data) for t in reader.tensors}
    want = bf16["model.embed_tokens.weight"].float().numpy()
    assert got["token_embd.weight"].dtype == np.float32
    assert np.array_equal(got["token_embd.weight"].reshape(want.shape), want)
