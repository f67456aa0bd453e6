"""`lmtune export RUN --format gguf [--quant q8_0] --out DIR`: GGUF + Ollama Modelfile."""

from __future__ import annotations

import argparse

# lmtune's own modules are imported inside the functions below: `lmtune --help` imports every
# command module to build its parser and must stay light (no torch, transformers, yaml).


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory, adapter, merged/full model folder, a Hub id in the local cache (owner/name) or 'tiny'")
    parser.add_argument("--format", default="gguf", choices=("gguf",), help="output format")
    parser.add_argument("--quant", default="q8_0", choices=("f32", "f16", "bf16", "q8_0", "q4_0"),
                        help="GGUF tensor type (norms and other 1-D tensors stay f32)")
    parser.add_argument("--out", required=True, help="directory for model-QUANT.gguf and Modelfile")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a non-empty --out (replaces only the files export writes)")
    parser.add_argument("--pre-tokenizer", default=None,
                        help="tokenizer.ggml.pre name for llama.cpp (default: recognised from the tokenizer, as "
                             "llama.cpp's converter does: llama-bpe, qwen2, gpt-4o, gpt-2, ...; else 'default')")


def tuning(args: argparse.Namespace):
    """CPU tuning for this process (applied by lmtune/cli.py before torch loads), from the first
    model's config and base, as for generate."""
    from lmtune.train.cpu_tuning import target_for_path

    return target_for_path(args.run)


def run(args: argparse.Namespace) -> int:
    from lmtune.export import export

    res = export(args.run, args.out, fmt=args.format, quant=args.quant, overwrite=args.overwrite,
                 pre_tokenizer=args.pre_tokenizer)
    s = res.summary
    print(f"gguf: {res.gguf} ({res.size_bytes / 2**20:.1f} MiB, {res.quant}, {s['tensors']} tensors, "
          f"vocab {s['vocab']}, {s['merges']} merges, pre-tokenizer {s['pre_tokenizer']})")
    print(f"modelfile: {res.modelfile} (template {s['template']}; stops {', '.join(map(repr, s['stops']))})")
    print(f"chat template: {res.gguf.parent / 'chat_template.jinja'} (e.g. vllm serve MERGED --chat-template it)")
    print(f"ollama: cd {res.gguf.parent} && ollama create NAME -f Modelfile && ollama run NAME")
    return 0
