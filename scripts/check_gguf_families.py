"""Every GGUF family in llama.cpp itself: for the tiny random model of each family
(tests/helpers/tiny_families.py), export f16/q8_0/q4_0 with lmtune and compare llama.cpp
(llama-cpp-python) with transformers: greedy tokens on 12 chat prompts, and the last-position
logits of each prompt.

    pip install --no-deps --target /tmp/llamacpp llama-cpp-python==0.3.36   # builds llama.cpp
    pip install --target /tmp/llamadeps diskcache==5.6.3
    PYTHONPATH=src:tests/helpers:/tmp/llamacpp:/tmp/llamadeps python scripts/check_gguf_families.py \
        [--families llama,qwen2] [--quants f16,q8_0,q4_0] [--jsonl benchmarks/results/gguf_families.jsonl]
        [--trained 100]   # first fine-tune each tiny model (scripts/gguf_family_training.py)

Prompt ids come from the tokenizer's chat template and are given to llama.cpp as ids, so only the
weights and hyperparameters are compared; llama.cpp's KV cache is f32 unless --kv-cache f16 (its
default), so the f32 row measures the file alone; llama.cpp's extra weight buffers (AMX, CPU
repack) are off unless --extra-bufts (_open_llama), so every CPU runs the same plain kernels. Prints
one JSON line per family and quant: identical greedy sequences (of 12), the share of tokens before
the first difference, and the largest last-position logit difference relative to the largest logit.
With --llama-quantize the control rows also say whether llama.cpp's file has lmtune's tensors (same
names, types, shapes and bytes, read with gguf.GGUFReader).

--prompts sql-test replaces the 12 general prompts by 12 questions of the SQL task's test split (with
its schema, as lmtune renders an SQL record's user turn), in-distribution for --trained models but
never trained on; the chat template renders them as it renders the default ones.

--trained STEPS fine-tunes each random model with lmtune's own full fine-tuning on the bundled SQL
task's training split before the export (the run directory is exported, as `lmtune export RUN`
does), so that its next-token distributions are peaked like a real model's; the rows then also say
the losses reached and how peaked transformers' greedy steps are (median top-1 probability, median
and smallest top-1 - top-2 logit margin relative to the largest logit).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from check_gguf_llamacpp import PROMPTS, greedy_llamacpp, greedy_transformers  # noqa: E402
from gguf_family_training import peakedness, sql_test_prompts, train_family  # noqa: E402


def _last_logits_llamacpp(llm, ids):
    import numpy as np

    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64)


def _llama_quantize(f32_file: Path, quant: str) -> Path:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = {"f16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16, "q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
                    "q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0}[quant]
    out = f32_file.with_name(f"llama-quantize-{quant}.gguf")
    if llama_cpp.llama_model_quantize(str(f32_file).encode(), str(out).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama_model_quantize failed on {f32_file}")
    return out


def _same_tensors(a: Path, b: Path) -> dict:
    """Whether two GGUF files hold the same tensors: names, types, shapes and data bytes."""
    from gguf import GGUFReader

    ta, tb = ({t.name: t for t in GGUFReader(f).tensors} for f in (a, b))
    differ = sorted(n for n in ta.keys() | tb.keys() if n not in ta or n not in tb
                    or ta[n].tensor_type != tb[n].tensor_type or list(ta[n].shape) != list(tb[n].shape)
                    or ta[n].data.tobytes() != tb[n].data.tobytes())
    return {"tensors_identical_to_lmtune": not differ, "tensors": len(ta), "tensors_differing": differ[:5]}


def _open_llama(gguf_file: Path, kv: str, extra_bufts: bool):
    """llama.cpp on the file; extra_bufts False turns off llama.cpp's extra weight buffers (AMX,
    CPU repack), which Llama() does not expose: on a CPU with AMX (Sapphire Rapids) ggml's AMX
    buffer takes the q8_0/q4_0 weights of these 64-wide models and decode segfaults, on llama.cpp's
    own quantizer's file as on lmtune's. Off, every CPU runs ggml's plain kernels."""
    import llama_cpp.llama_cpp as low
    from llama_cpp import Llama

    default = low.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = extra_bufts
        return p

    kv_type = {"f32": 0, "f16": 1}[kv]  # GGML_TYPE_F32 / F16
    low.llama_model_default_params = params  # read once, in Llama.__init__
    try:
        return Llama(model_path=str(gguf_file), n_ctx=512, n_threads=1, logits_all=True, verbose=False,
                     type_k=kv_type, type_v=kv_type)
    finally:
        low.llama_model_default_params = default


def check_family(family: str, quants: list[str], max_tokens: int, tmp: Path, kv: str,
                 llama_quantize: bool = False, trained: int = 0, extra_bufts: bool = False,
                 prompt_set: str = "default") -> list[dict]:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lmtune.export import export
    from tiny_families import save_family_model

    path = weights = save_family_model(tmp / family, family)
    extra = {}
    texts = sql_test_prompts() if prompt_set == "sql-test" else PROMPTS
    if trained:  # export the run directory (as `lmtune export RUN`); transformers loads its model/
        # the training data is the same for both prompt sets (the test questions are never in it)
        path, extra = train_family(path, tmp / f"{family}-run", PROMPTS, trained)
        weights = path / "model"
    tok = AutoTokenizer.from_pretrained(str(weights))
    model = AutoModelForCausalLM.from_pretrained(str(weights), dtype=torch.float32).eval()
    prompts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                                       return_dict=False) for p in texts]
    reference = [greedy_transformers(model, p, max_tokens) for p in prompts]
    if trained:
        extra.update(peakedness(model, prompts, reference))
    with torch.no_grad():
        last = [model(input_ids=torch.tensor([p])).logits[0, -1].double().numpy() for p in prompts]
    rows, files = [], {}
    runs = [(q, "lmtune") for q in quants]
    if llama_quantize:
        runs += [(q, "llama-quantize") for q in quants if q in ("f16", "q8_0", "q4_0")]
    for quant, writer in runs:
        extra_row = {}
        if writer == "lmtune":
            res = export(str(path), str(tmp / f"{family}-{quant}"), quant=quant)
            gguf_file = files[quant] = res.gguf
        else:  # the control: llama.cpp's own quantizer applied to lmtune's f32 file
            res = export(str(path), str(tmp / f"{family}-{quant}-f32"), quant="f32")
            gguf_file = _llama_quantize(res.gguf, quant)
            if quant in files:  # lmtune's own file of this quant, written above
                extra_row = _same_tensors(files[quant], gguf_file)
        llm = _open_llama(gguf_file, kv, extra_bufts)
        got = [greedy_llamacpp(llm, p, max_tokens) for p in prompts]
        diffs = [np.abs(_last_logits_llamacpp(llm, p) - want).max() / np.abs(want).max() for p, want in zip(prompts, last)]
        del llm
        prefix = sum(next((i for i, (a, b) in enumerate(zip(g, r)) if a != b), len(r)) for g, r in zip(got, reference))
        rows.append({"family": family, "architecture": res.summary["architecture"], "quant": quant, "writer": writer,
                     "kv_cache": kv, "extra_bufts": extra_bufts,
                     "prompt_set": prompt_set, "prompts": len(prompts), "max_tokens": max_tokens,
                     "identical_sequences": sum(g == r for g, r in zip(got, reference)),
                     "tokens_before_first_difference": round(prefix / (len(prompts) * max_tokens), 3),
                     "last_logits_max_rel_diff": float(f"{max(diffs):.2e}"), **extra, **extra_row})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=None, help="comma-separated (default: all of tiny_families.FAMILIES)")
    ap.add_argument("--quants", default="f16,q8_0,q4_0")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--kv-cache", choices=["f32", "f16"], default="f32",
                    help="llama.cpp's KV cache type: f32 measures the file alone; f16 is llama.cpp's default "
                         "and adds its own rounding (about 1e-3 of the logits)")
    ap.add_argument("--llama-quantize", action="store_true",
                    help="also quantize lmtune's f32 file with llama.cpp's own quantizer (f16/q8_0/q4_0): "
                         "the control for what the quant itself costs on these random models")
    ap.add_argument("--trained", type=int, default=0, metavar="STEPS",
                    help="first fine-tune each tiny model for STEPS optimizer steps (lmtune's full fine-tuning "
                         "on the bundled SQL training split; scripts/gguf_family_training.py); 0: random weights")
    ap.add_argument("--extra-bufts", action="store_true",
                    help="let llama.cpp repack the weights into its extra CPU buffers (AMX, repack); off by "
                         "default: the AMX one segfaults on these tiny q8_0/q4_0 models")
    ap.add_argument("--prompts", choices=["default", "sql-test"], default="default",
                    help="default: the 12 general chat prompts; sql-test: 12 questions of the SQL task's test "
                         "split (in-distribution for --trained, never trained on)")
    ap.add_argument("--jsonl", default=None, help="also append the rows to this file")
    args = ap.parse_args()

    import lmtune  # noqa: F401  (passive OpenMP waiting before torch loads)
    from tiny_families import FAMILIES

    families = args.families.split(",") if args.families else list(FAMILIES)
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            try:
                rows = check_family(family, args.quants.split(","), args.max_tokens, Path(tmp), args.kv_cache,
                                    args.llama_quantize, args.trained, args.extra_bufts, args.prompts)
            except Exception as exc:  # report a family llama.cpp refuses, then go on with the next
                rows = [{"family": family, "error": f"{type(exc).__name__}: {exc}"}]
            for row in rows:
                print(json.dumps(row), flush=True)
                if args.jsonl:
                    with open(args.jsonl, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
