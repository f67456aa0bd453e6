#!/usr/bin/env bash
# Prepares, on a machine with network, the Python packages the GPU machine lacks, as two installed
# folders (packed into one archive, .gpu-site/sites.tar.gz, git-ignored) for its Python 3.12 x86-64 (torch 2.11 + CUDA 13.0, transformers 5.17, peft, accelerate,
# triton 3.6 there; no network there):
#
#   .gpu-site/lmtune    trl 1.16.0, datasets 5.2.0 (+ dill, multiprocess), bitsandbytes 0.50.2 and
#                       liger-kernel 0.8.5: what lmtune, the HF+PEFT and the TRL cases need
#   .gpu-site/unsloth   Unsloth 2026.10.9 and what it needs beyond that (its own trl 1.15.0, the newest
#                       it allows, and datasets 4.x): the Unsloth cases put it first on PYTHONPATH, so
#                       they run in their own environment next to the others
#
#   bash benchmarks/gpu_wheels.sh          # then carry .gpu-site to the GPU machine and there:
#   tar -xzf .gpu-site/sites.tar.gz -C /tmp && PYTHONPATH=/tmp/gpu-site/lmtune OUT=$OUT \
#     python3 benchmarks/gpu_suite.py --unsloth-site /tmp/gpu-site/unsloth
#
# Installed folders in an archive instead of wheels: what travels to the machine is capped at 64 MiB
# together with the repository (about 25 MiB), and bitsandbytes' wheel alone is 41 MiB, one CUDA
# library per CUDA version; installed here, all but the CUDA 13.0 one (the GPU machine's) are
# deleted, which leaves about 4 MiB. Deleted from Unsloth's folder: its web UI (studio/, 60 MiB),
# its Apple MLX code, torchao and hf_transfer (imported only for fp8/QAT and for fast downloads). Left out: xformers (a build for one torch version, over 100 MiB; Unsloth falls back to
# PyTorch's SDPA without it, unsloth/models/_utils.py) and diffusers (not imported for text models).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mktemp -d)/gpu-site"
ARCHIVE="$ROOT/.gpu-site/sites.tar.gz"
PIP="${PIP:-python3 -m pip}"
TARGET=(--no-deps --only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64
        --platform any)
CUDA_KEEP="${CUDA_KEEP:-cuda130}"

install() {   # install <folder> <package==version>...
  local dir="$1"; shift
  rm -rf "$dir"; mkdir -p "$dir"
  $PIP install --quiet --target "$dir" "${TARGET[@]}" --no-compile "$@"
  rm -rf "$dir"/bin
}

install "$OUT/lmtune" trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 \
  bitsandbytes==0.50.2 liger-kernel==0.8.5
find "$OUT/lmtune/bitsandbytes" -name 'libbitsandbytes_*.so' ! -name "libbitsandbytes_${CUDA_KEEP}.so" \
  ! -name 'libbitsandbytes_cpu.so' -delete

install "$OUT/unsloth" unsloth==2026.10.9 unsloth_zoo==2026.10.9 trl==1.15.0 datasets==4.8.5 \
  dill==0.4.0 multiprocess==0.70.18 cut_cross_entropy==25.1.1 tyro==1.0.17 \
  docstring-parser==0.18.0 shtab==1.13.0 typeguard==4.6.1 msgspec==0.22.0 structlog==26.1.0 json5==0.17.3 \
  nest-asyncio==1.6.0
rm -rf "$OUT/unsloth/studio" "$OUT/unsloth/unsloth_zoo/mlx" "$OUT/unsloth/test" "$OUT/unsloth/unsloth_cli"
du -sh "$OUT"/*
mkdir -p "$(dirname "$ARCHIVE")"
tar -czf "$ARCHIVE.tmp" -C "$(dirname "$OUT")" gpu-site && mv "$ARCHIVE.tmp" "$ARCHIVE"
rm -rf "$(dirname "$OUT")"
ls -la "$ARCHIVE"
