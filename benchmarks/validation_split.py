"""What the automatic validation split costs at the end of `lmtune train`: the data preparation
(prepare_datasets: scan, dedupe, splits, tokenizing; data cache off) and the final validation pass
(lmtune.evaluate.run.validation_loss, the pass train_summary.json's eval_loss comes from) on the
embedded tiny base (Llama, hidden 256, 4 layers), at N synthetic short alpaca records (~40 tokens).

Reference, in the same process: the same pass over as many rows as the uncapped split held before
the cap (data.val_split = 5% of the examples left after the held-out test split), taken from the
prepared training rows (the same kind of short records: the pass's cost depends only on how many
rows and tokens it reads). The ratio reference / capped is what the cap saves at the end of a run.

    nice python benchmarks/validation_split.py --sizes 10000,100000          # ~ minutes on 2 cores
    nice python benchmarks/validation_split.py --sizes 1000000 --no-reference   # long: prepare ~ minutes

Prints one JSON line per size and a markdown table (benchmarks/README.md, "Validation split").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from data_scale import synthetic_alpaca  # noqa: E402  (benchmarks/ is not a package)


def measure(n: int, work: Path, reference: bool = True) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from lmtune.config import load_config
    from lmtune.data import ensure_pad_token, prepare_datasets
    from lmtune.data.holdout import validation_size
    from lmtune.evaluate.run import validation_loss
    from lmtune.models import embedded_model_dir, load_tokenizer

    path = synthetic_alpaca(work / f"train-{n}.jsonl", n)
    cfg = load_config(None, ["model.name_or_path=tiny", f"data.train={path}", "data.cache=false"])
    tokenizer = load_tokenizer(cfg.model.name_or_path, cfg.model)
    grew = ensure_pad_token(tokenizer)
    load_before = round(os.getloadavg()[0], 2)
    t0 = time.perf_counter()
    data = prepare_datasets(cfg.data, tokenizer)
    prepare_s = time.perf_counter() - t0
    model = AutoModelForCausalLM.from_pretrained(str(embedded_model_dir("tiny")))
    if grew:
        model.resize_token_embeddings(len(tokenizer))
    kept = data.stats["test_split"]["of"] - data.stats["test_split"]["held_out"]
    uncapped = validation_size(kept, cfg.data.val_split, None)
    capped = len(data.validation)
    t0 = time.perf_counter()
    val = validation_loss(model, data.validation, tokenizer, cfg)
    capped_s = time.perf_counter() - t0
    row = {"records": n, "validation": capped, "uncapped_validation": uncapped,
           "prepare_s": round(prepare_s, 1), "final_val_s": round(capped_s, 1), "val_tokens": val.tokens,
           "reference_final_val_s": None, "saved_x": None, "reference_tokens": None}
    if reference:
        reference_rows = data.train.select(range(min(uncapped, len(data.train))))
        t0 = time.perf_counter()
        ref = validation_loss(model, reference_rows, tokenizer, cfg)
        reference_s = time.perf_counter() - t0
        row.update(reference_final_val_s=round(reference_s, 1), saved_x=round(reference_s / capped_s, 1),
                   reference_tokens=ref.tokens)
    return {**row, "threads": torch.get_num_threads(), "load_before": load_before,
            "load_after": round(os.getloadavg()[0], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated record counts")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the uncapped reference pass (at 1M records it reads ~50,000 rows)")
    parser.add_argument("--work", default=None, help="directory for the synthetic files (default: a temporary one)")
    args = parser.parse_args()
    from lmtune.config import load_config
    from lmtune.cpu_tuning import Target, apply

    # threads and OpenMP wait policy as `lmtune train` sets them, before torch is imported
    apply(Target(load_config(None, ["model.name_or_path=tiny", "data.train=x"]), "tiny", training=True))
    rows = []
    with tempfile.TemporaryDirectory(prefix="lmtune-bench-val-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        for n in (int(s) for s in args.sizes.split(",")):
            rows.append(measure(n, work, not args.no_reference))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| records | validation (uncapped) | prepare | final validation pass | uncapped pass (reference) | saved |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        ref = "not run" if r["saved_x"] is None else f"{r['reference_final_val_s']} s"
        saved = "-" if r["saved_x"] is None else f"x{r['saved_x']}"
        print(f"| {r['records']:,} | {r['validation']:,} ({r['uncapped_validation']:,}) | {r['prepare_s']} s | "
              f"{r['final_val_s']} s | {ref} | {saved} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
