"""`lmtune merge RUN --out DIR`."""

from __future__ import annotations

import argparse

# lmtune's own modules are imported inside the functions below: `lmtune --help` imports every
# command module to build its parser and must stay light (no torch, transformers, yaml).


def register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run directory (or adapter directory) to merge")
    parser.add_argument("--out", required=True, help="where to write the standalone model")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"), help="dtype of the saved weights")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")


def tuning(args: argparse.Namespace):
    """CPU tuning for this process (applied by lmtune/cli.py before torch loads)."""
    from lmtune.train.cpu_tuning import target_for_path

    return target_for_path(args.run)


def run(args: argparse.Namespace) -> int:
    from lmtune.merge import merge

    res = merge(args.run, args.out, overwrite=args.overwrite, dtype=args.dtype)
    print(f"merged model: {res.out_dir} ({res.size_bytes / 2**20:.1f} MiB)")
    print(f"max |logit diff| merged vs base+adapter: {res.max_logit_diff:.3g}")
    if res.max_logit_diff_4bit is not None:
        print(f"max |logit diff| merged vs 4-bit base+adapter: {res.max_logit_diff_4bit:.3g} "
              "(rounding of the 4-bit base; the merge itself is exact on the dequantized base)")
    return 0
