"""Portable, truthful artifacts: the adapter names a base plain peft can resolve ('tiny' for the
embedded base, loadable without lmtune as the card says), filled model cards for adapter/, every
checkpoint and the merged model (steps and epochs that ran), and one parameter count in estimate and
train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lmtune.cli import main


def test_estimate_and_train_count_the_same_parameters():
    """The embedded base with LoRA r=16 on all-linear: estimate reads the config, train counts the
    prepared model; both report the base's 5,507,328 (tied embeddings once) and 327,680 trainable."""
    from lmtune.train import methods
    from lmtune.config import load_config
    from lmtune.estimate import EstimateRequest, estimate
    from lmtune.models import detect_device, load_model, load_tokenizer, resolve_model_path

    for method in ("lora", "full"):
        cfg = load_config(None, ["data.task=sql", f"method={method}"])
        ref = resolve_model_path("tiny")
        model = load_model(ref, cfg, detect_device(), load_tokenizer(ref, cfg.model), quantize=False)
        trainable, total = methods.count_parameters(methods.prepare(model, cfg))
        est = estimate(EstimateRequest(model="tiny", method=method, gpu="cpu")).to_dict()["model"]
        assert (trainable, total) == (est["trainable_params"], est["total_params"])
        assert total == 5_507_328 and trainable == (327_680 if method == "lora" else total)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("artifacts")
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Say {i}.", "input": "", "output": f"{i}"}) + "\n"
                            for i in range(12)))
    cfg = {"model": {"name_or_path": "tiny"},
           "data": {"train": [str(data)], "val_split": 0.0, "max_length": 32, "template": "alpaca"},
           "train": {"max_steps": 3, "batch_size": 4, "grad_accum": 1, "threads": 1, "save_steps": 2,
                     "load_best": False, "logging_steps": 1},
           "eval": {"after_train": False, "forgetting_check": False},
           "output": {"dir": str(root / "run"), "report": False}}
    (root / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", str(root / "cfg.yaml")]) == 0
    return root / "run"


def test_adapter_names_tiny_and_loads_with_plain_peft_as_documented(run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lmtune.models import embedded_model_dir
    from lmtune.inference_loading import open_path

    for adapter in (run / "adapter", run / "checkpoints" / "checkpoint-2"):
        assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny"
    card = (run / "adapter" / "README.md").read_text()
    assert "embedded_model_dir('tiny')" in card   # the documented way, used verbatim below
    base = AutoModelForCausalLM.from_pretrained(str(embedded_model_dir("tiny")))
    model = PeftModel.from_pretrained(base, str(run / "adapter"))
    assert any(torch.count_nonzero(p) for n, p in model.named_parameters() if "lora_B" in n)  # trained
    assert open_path(str(run / "adapter")).base_ref == str(embedded_model_dir("tiny"))   # lmtune resolves it too


def test_cards_say_what_ran(run, tmp_path):
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["global_step"] == 3 and summary["epochs"] == pytest.approx(1.0)
    adapter = (run / "adapter" / "README.md").read_text()
    ckpt = (run / "checkpoints" / "checkpoint-2" / "README.md").read_text()
    for text in (adapter, ckpt):
        assert "More Information Needed" not in text          # peft's empty template is gone
        assert "base model: `tiny`" in text and "LoRA r=16, alpha=32" in text and "`train.jsonl`" in text
    assert "3 optimizer steps, 1 epochs" in adapter and f"final_train_loss: {summary['final_train_loss']:.4g}" in adapter
    assert "2 optimizer steps, 0.667 epochs" in ckpt
    assert main(["merge", str(run), "--out", str(tmp_path / "merged")]) == 0
    merged = (tmp_path / "merged" / "README.md").read_text()
    assert "# lmtune merged model" in merged and "3 optimizer steps, 1 epochs" in merged
    assert "Merge check" in merged and "epochs: 3.0" not in merged.lower()   # not the configured epochs
