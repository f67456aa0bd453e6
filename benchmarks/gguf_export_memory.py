"""Peak memory and time of a GGUF export: lmtune (this tree), lmtune from another tree (main before
tensors streamed), and llama.cpp's convert_hf_to_gguf.py, on the same random bf16 Llama folder.

    git archive main src | tar -x -C /tmp/main-tree          # the reference tree (optional)
    .venv/bin/python benchmarks/gguf_export_memory.py --shape 1b --old /tmp/main-tree \\
        --llama-cpp /tmp/llama.cpp/convert_hf_to_gguf.py      # from llama-cpp-python's sdist (vendor/llama.cpp)
    ... --dtype f16 ...      # main before streaming cannot read bf16 at all: compare it on an f16 folder

llama.cpp's converter imports sentencepiece (not an lmtune dependency): put it on PYTHONPATH
(`pip install --target DIR sentencepiece`).

Each export runs in a fresh child under /usr/bin/time -v: peak RSS is its "Maximum resident set
size"; the ratio is peak RSS / the size of the safetensors files (one copy of the weights). The
folder's tokenizer is the tests' tiny byte-level one: the tensors are what is measured. llama.cpp's
converter refuses a BPE tokenizer whose pre-tokenizer hash it does not know, so it runs through a
shim that names the pre-tokenizer "llama-bpe" (the vocabulary is a few hundred tokens either way).
One JSON line per export is appended to --results.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {  # Llama 3.2 1B (tied embeddings, llama3 rope) and Llama 2 7B (untied)
    "1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
               num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, max_position_embeddings=131072,
               rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=32000, tie_word_embeddings=False, max_position_embeddings=4096,
               rope_theta=10000.0),
}
SHIM = """import sys; sys.argv = sys.argv[1:]; sys.path.insert(0, __import__("os").path.dirname(sys.argv[0]))
import conversion.base as b; b.TextModel.get_vocab_base_pre = lambda self, tok: "llama-bpe"
import runpy; runpy.run_path(sys.argv[0], run_name="__main__")"""


def build_folder(path: Path, shape: str, dtype: str) -> int:
    """A random Llama folder in `dtype`, one shard per layer (written shard by shard, so building it
    never holds the model). Returns the bytes of its safetensors files."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    sys.path.insert(0, str(ROOT / "tests" / "helpers"))
    from tiny_models import build_tokenizer

    if (path / "config.json").exists():
        return sum(f.stat().st_size for f in path.glob("*.safetensors"))
    s = SHAPES[shape]
    torch_dtype = {"bf16": torch.bfloat16, "f16": torch.float16}[dtype]
    cfg = LlamaConfig(**s, rms_norm_eps=1e-5, torch_dtype=str(torch_dtype).split(".")[1], architectures=["LlamaForCausalLM"])
    h, kv = s["hidden_size"], s["num_key_value_heads"] * (s["hidden_size"] // s["num_attention_heads"])
    rand = lambda *shape_: (torch.randn(*shape_, dtype=torch_dtype) * 0.02).contiguous()  # noqa: E731
    shards = [{"model.embed_tokens.weight": rand(s["vocab_size"], h), "model.norm.weight": torch.ones(h, dtype=torch_dtype)}]
    if not s["tie_word_embeddings"]:
        shards[0]["lm_head.weight"] = rand(s["vocab_size"], h)
    path.mkdir(parents=True, exist_ok=True)
    weight_map, n = {}, s["num_hidden_layers"] + 1
    for i in range(n):
        if i > 0:
            p = f"model.layers.{i - 1}."
            shards = [{p + "self_attn.q_proj.weight": rand(h, h), p + "self_attn.k_proj.weight": rand(kv, h),
                       p + "self_attn.v_proj.weight": rand(kv, h), p + "self_attn.o_proj.weight": rand(h, h),
                       p + "mlp.gate_proj.weight": rand(s["intermediate_size"], h),
                       p + "mlp.up_proj.weight": rand(s["intermediate_size"], h),
                       p + "mlp.down_proj.weight": rand(h, s["intermediate_size"]),
                       p + "input_layernorm.weight": torch.ones(h, dtype=torch_dtype),
                       p + "post_attention_layernorm.weight": torch.ones(h, dtype=torch_dtype)}]
        name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file(shards[0], str(path / name), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shards[0], name))
    total = sum(f.stat().st_size for f in path.glob("*.safetensors"))
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                   "weight_map": weight_map}))
    cfg.save_pretrained(str(path))
    build_tokenizer().save_pretrained(str(path))
    return total


def measure(argv: list[str], env: dict) -> dict:
    """Run argv under /usr/bin/time -v; its peak RSS, wall and CPU seconds."""
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *argv], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:  # recorded, not fatal: main before streaming cannot read bf16
        errors = [line for line in proc.stderr.splitlines() if "Error" in line]
        return {"error": errors[-1] if errors else proc.stderr[-300:]}
    field = lambda key: float(re.search(rf"{re.escape(key)}: ([\d.]+)", proc.stderr).group(1))  # noqa: E731
    return {"peak_rss_bytes": int(field("Maximum resident set size (kbytes)") * 1024), "wall_s": round(wall, 1),
            "cpu_s": round(field("User time (seconds)") + field("System time (seconds)"), 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", choices=sorted(SHAPES), default="1b")
    ap.add_argument("--work", type=Path, default=Path("/tmp/gguf_export_memory"))
    ap.add_argument("--quant", default="q8_0")
    ap.add_argument("--dtype", choices=["bf16", "f16"], default="bf16",
                    help="f16 lets a tree that cannot read bf16 (main before streaming) be measured")
    ap.add_argument("--old", type=Path, help="another lmtune tree (its src/ is used), e.g. main before streaming")
    ap.add_argument("--llama-cpp", type=Path, help="llama.cpp's convert_hf_to_gguf.py")
    ap.add_argument("--only", nargs="*", default=["lmtune", "old", "llama.cpp"])
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks/results/gguf_export_memory.jsonl")
    args = ap.parse_args()
    folder = args.work / f"llama-{args.shape}-{args.dtype}"
    weights = build_folder(folder, args.shape, args.dtype)
    print(f"{folder}: {weights / 1e9:.2f} GB of {args.dtype} safetensors", flush=True)
    runs = {"lmtune": ROOT}
    if args.old:
        runs["old"] = args.old
    for label, tree in runs.items():
        if label not in args.only:
            continue
        out = args.work / f"out-{label}"
        subprocess.run(["rm", "-rf", str(out)], check=True)  # our own scratch folder under --work
        env = {**os.environ, "PYTHONPATH": str(tree / "src"), "HF_HUB_OFFLINE": "1"}
        _record(args, label, weights, measure([sys.executable, "-m", "lmtune", "export", str(folder), "--format",
                                                "gguf", "--quant", args.quant, "--out", str(out)], env))
    if args.llama_cpp and "llama.cpp" in args.only:
        outfile = args.work / "out-llama.cpp.gguf"
        _record(args, "llama.cpp", weights, measure([sys.executable, "-c", SHIM, str(args.llama_cpp), str(folder),
                                                     "--outtype", args.quant, "--outfile", str(outfile)],
                                                    {**os.environ, "HF_HUB_OFFLINE": "1"}))


def _record(args, label: str, weights: int, m: dict) -> None:
    row = {"exporter": label, "shape": args.shape, "dtype": args.dtype, "quant": args.quant, "weights_bytes": weights, **m, "cpus": os.cpu_count()}
    if "peak_rss_bytes" in m:
        row["peak_rss_over_weights"] = round(m["peak_rss_bytes"] / weights, 2)
    print(json.dumps(row), flush=True)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as f:
        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
