"""Merge a run's adapter into its base: a standalone model that plain transformers loads.

A 4-bit (QLoRA) base is never merged into: the base is reloaded in 16/32-bit and the adapter is
merged there. Adding the low-rank update to NF4 weights and re-quantizing would round it away.
Before writing, merged logits are compared with base+adapter logits, non-finite weights are
refused (peft's safe_merge), and free disk space is checked. The output appears whole or not at all.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from lmtune import inference_loading
from lmtune.errors import UserError
from lmtune.models import check_adapter_base, read_weight_shapes, torch_dtype
from lmtune.run.artifacts import model_card as card
from lmtune.run.artifacts import read_json
from lmtune.run.layout import check_new_output_dir, replace_dir, write_json, write_output_marker, write_text

PROBE_TEXT = "SELECT name FROM customers WHERE city = 'Berlin'; The quick brown fox jumps over the lazy dog."
# Largest |merged - (base + adapter)| logit difference accepted, relative to the largest |logit|
# (at least 1): a correct merge differs only by float rounding (~1e-7 in fp32 on the test models);
# a 16-bit base rounds W + BA to 8 (bf16) or 11 (fp16) mantissa bits.
MERGE_TOLERANCE = {"float32": 1e-3, "float16": 1e-2, "bfloat16": 5e-2}


@dataclass
class MergeResult:
    out_dir: Path
    max_logit_diff: float               # merged vs (16/32-bit base + adapter)
    max_logit_diff_4bit: float | None   # merged vs (4-bit base + adapter), QLoRA only
    size_bytes: int


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=ids.to(model.device)).logits.float().cpu()


def _check_logits(diff: float, before, merged) -> None:
    """Refuse a merged model whose logits differ from base+adapter beyond MERGE_TOLERANCE."""
    dtype = str(next(merged.parameters()).dtype).removeprefix("torch.")
    limit = MERGE_TOLERANCE.get(dtype, MERGE_TOLERANCE["bfloat16"]) * max(1.0, float(before.abs().max()))
    if not diff <= limit:  # NaN included
        raise UserError(f"the merged model's logits differ from base+adapter by {diff:.3g} (tolerance {limit:.3g} "
                        f"in {dtype}): the merge is wrong, nothing was written",
                        ["check that the adapter was trained on this base (adapter_config.json "
                         "base_model_name_or_path) and that peft is the pinned version"])


def _check_disk(out: Path, size: int) -> None:
    parent = out.absolute().parent
    while not parent.exists():  # --out may name directories that do not exist yet
        parent = parent.parent
    free = shutil.disk_usage(parent).free
    need = int(size * 1.1) + 50 * 2**20  # weights + tokenizer/metadata slack
    if free < need:
        raise UserError(f"not enough disk space for the merged model under {parent}: "
                        f"{free / 2**30:.2f} GiB free, about {need / 2**30:.2f} GiB needed",
                        ["free some space or pass --out on another disk"])


def merge(run_path: str, out: str, overwrite: bool = False, dtype: str = "fp32") -> MergeResult:
    if not Path(run_path).exists():
        raise UserError(f"{run_path}: no such run or adapter directory",
                        ["give the run directory `lmtune train` wrote (its output.dir) or an adapter directory"])
    loaded = inference_loading.open_path(run_path, weights=False)
    if loaded.adapter_dir is None:
        raise UserError(f"{run_path}: has no adapter to merge (full fine-tuning already saved a whole model)",
                        ["use the run's model/ directory directly"])
    out_dir = Path(out)
    _check_out(out_dir, Path(run_path), loaded, overwrite)

    inference_loading.check_weights(loaded)

    check_adapter_base(loaded.adapter_dir, loaded.base_ref,
                       allow_pickle=loaded.config is not None and loaded.config.model.allow_pickle)
    if Path(loaded.base_ref).is_dir():  # the merged model has the base's tensors: size known before loading
        _check_disk(out_dir, _bytes_of(read_weight_shapes(Path(loaded.base_ref)), dtype))

    diff_4bit = None
    was_qlora = loaded.config is not None and loaded.config.method == "qlora"
    # Merge on a full-precision base; `quantized=False` reloads a QLoRA base dequantized.
    model, tokenizer = inference_loading.load_for_inference(loaded, use_adapter=True, quantized=False)
    ids = tokenizer(PROBE_TEXT, return_tensors="pt").input_ids
    before = _logits(model, ids)
    if was_qlora:
        qmodel, _ = inference_loading.load_for_inference(loaded, use_adapter=True, quantized=True)
        diff_4bit = float((_logits(qmodel, ids) - before).abs().max())
        del qmodel
    try:  # safe_merge: peft checks each merged weight for NaN/inf before it replaces the original
        merged = model.merge_and_unload(safe_merge=True)
    except ValueError as exc:
        if "NaN" not in str(exc):
            raise
        raise UserError(f"merging {loaded.adapter_dir} gives NaN or inf weights ({exc})",
                        ["the adapter is broken (a diverged run?); retrain with a lower learning rate"]) from None
    diff = float((_logits(merged, ids) - before).abs().max())
    _check_logits(diff, before, merged)
    if dtype != "fp32":
        merged = merged.to(torch_dtype(dtype))
    size = sum(p.numel() * p.element_size() for p in merged.state_dict().values())
    _check_disk(out_dir, size)

    staging = out_dir.with_name(f".{out_dir.name}.staging")
    if staging.exists():
        shutil.rmtree(staging)
    merged.save_pretrained(str(staging), safe_serialization=True)
    tokenizer.save_pretrained(str(staging))
    if loaded.template:
        write_json(staging / "lmtune_template.json", loaded.template)
    write_text(staging / "README.md", model_card(loaded, diff, diff_4bit, run_path))
    write_output_marker(staging, "merged")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    replace_dir(staging, out_dir)
    return MergeResult(out_dir, diff, diff_4bit, size)


def _check_out(out_dir: Path, run_path: Path, loaded, overwrite: bool) -> None:
    """--out must be a new or empty directory, or (with --overwrite) one lmtune wrote; never the run,
    its adapter, the base, the current directory or a directory holding them: replacing it would
    delete what is being merged (run/layout.py check_new_output_dir)."""
    if out_dir.exists() and not out_dir.is_dir() and not out_dir.is_symlink():
        raise UserError(f"--out {out_dir} exists and is not a directory", ["choose a directory path for --out"])
    target = out_dir.resolve()
    adapter = loaded.adapter_dir.resolve()
    for p in (run_path.resolve(), adapter):
        if target == p or p.is_relative_to(target) or (p == adapter and target.is_relative_to(adapter)):
            raise UserError(f"--out {out_dir} would replace {p}, which the merge reads",
                            ["write the merged model elsewhere, e.g. --out merged/ or a new folder inside the run"])
    inputs = [Path.cwd(), run_path, loaded.adapter_dir]
    if Path(loaded.base_ref).exists():
        inputs.append(Path(loaded.base_ref))
    check_new_output_dir(out_dir, "--out", overwrite, inputs, "choose another directory or pass --overwrite")


def _bytes_of(shapes: dict[str, list[int]], dtype: str) -> int:
    per = {"fp32": 4, "bf16": 2, "fp16": 2}[dtype]
    return sum(math.prod(shape) for shape in shapes.values()) * per


def model_card(loaded, diff: float, diff_4bit: float | None, run_path: str) -> str:
    """The merged model's README.md: the run's card (base, method, data, the steps and epochs that
    ran, metrics; lmtune/run/artifacts.py) plus the merge check."""
    check = ["## Merge check", "", f"Max |logit difference| merged vs base+adapter: {diff:.3g}"]
    if diff_4bit is not None:
        check.append(f"Max |logit difference| merged vs 4-bit base+adapter: {diff_4bit:.3g} "
                     "(the merge uses the dequantized base; see lmtune docs on QLoRA merging)")
    check.append("")
    if loaded.config is None:  # a bare adapter directory: no run to describe
        return "\n".join(["---", "library_name: transformers", "tags: [lmtune, merged]", "---", "",
                          "# lmtune merged model", "", f"Base model: `{loaded.base_ref}`", "", *check,
                          "Load it with plain transformers: `AutoModelForCausalLM.from_pretrained(<this dir>)`.", ""])
    summary = read_json(Path(run_path) / "train_summary.json") or {}
    return card("merged model", loaded.config, summary.get("global_step", 0), summary.get("epochs"), summary,
                read_json(Path(run_path) / "eval.json"), extra=check)
