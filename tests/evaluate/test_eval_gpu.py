"""Evaluation on CUDA: tensors follow the model's device (loss, generation), the LoRA base is the
same model with its adapter off, a full fine-tune's base is reloaded onto the GPU. Skipped without
CUDA. It needs no trl/datasets/bitsandbytes, so it also runs as a script on a bare GPU machine:
`PYTHONPATH=src:tests python tests/evaluate/test_eval_gpu.py`."""

from __future__ import annotations

import json
import math

import pytest
import torch

pytestmark = pytest.mark.gpu


def _setup(root):
    from lmtune.config import from_dict
    from data_reference import tokenize_examples
    from lmtune.data import get_template, load_split
    from lmtune.models import load_tokenizer
    from lmtune.tasks import task_files
    from tiny_models import save_tiny_model

    base = save_tiny_model(root / "base", "llama")
    # The bundled SQL task: its scorer needs only sqlite3 (a bare GPU machine has no rouge-score).
    raw = {"model": {"name_or_path": str(base)}, "data": {"task": "sql"},
           "eval": {"max_new_tokens": 8, "num_samples": 6}}
    cfg = from_dict(raw)
    tok = load_tokenizer(str(base), cfg.model)
    template = get_template("auto", "alpaca", tok)
    val = load_split([str(task_files("sql")["validation"])]).examples[:12]
    tokd = tokenize_examples(val, template, tok, 320)
    rows = [{"input_ids": i, "completion_mask": m} for i, m in zip(tokd.input_ids, tokd.completion_mask)]
    return raw, tok, template, rows


def _check(root) -> dict:
    from peft import LoraConfig, get_peft_model

    from lmtune.config import from_dict
    from lmtune.evaluate import final_evaluation
    from lmtune.models import detect_device, load_model

    raw, tok, template, rows = _setup(root)
    device = detect_device()
    out = {}
    for method in ("lora", "full"):
        cfg = from_dict({**raw, "method": method})
        model = load_model(cfg.model.name_or_path, cfg, device, tok).to(device.kind)
        if method == "lora":
            model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
        with torch.no_grad():   # "training": move the weights so tuned differs from base
            for name, p in model.named_parameters():
                if p.requires_grad and ("lora_B" in name or method == "full"):
                    p.add_(0.05 * torch.randn_like(p))
        run = root / method
        run.mkdir()
        out[method] = final_evaluation(cfg, run, model, tok, template, validation=rows, progress=False)
        assert next(model.parameters()).device.type == device.kind
    return out


def _assert(out: dict) -> None:
    lora, full = out["lora"], out["full"]
    for ev in (lora, full):
        assert math.isfinite(ev["validation"]["tuned"]["loss"]) and ev["task"]["examples"] == 6
        assert ev["validation"]["tuned"]["loss"] != ev["validation"]["base"]["loss"]
    # Both bases are the saved tiny model: through disable_adapter() and reloaded from disk.
    assert lora["validation"]["base"]["loss"] == pytest.approx(full["validation"]["base"]["loss"], rel=1e-4)
    assert lora["forgetting"]["base_perplexity"] == pytest.approx(full["forgetting"]["base_perplexity"], rel=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_evaluation_on_cuda(tmp_path):
    _assert(_check(tmp_path))


if __name__ == "__main__":
    import sys
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        result = _check(Path(d))
        print(json.dumps({m: {"validation": r["validation"], "task": r["task"], "forgetting": r["forgetting"]}
                          for m, r in result.items()}, indent=1))
        _assert(result)
        print("GPU EVAL CHECK OK", torch.cuda.get_device_name(0))
        sys.exit(0)
