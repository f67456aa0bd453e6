"""What tests/evaluate/test_eval_run_units.py and tests/evaluate/test_eval_run_api_units.py share: a tiny LoRA model
with a random adapter that changes what it says (the `tiny` fixture), its configs and small helpers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from lmtune.config import load_config
from lmtune.data.templates import AlpacaTemplate
from lmtune.evaluate import forgetting
from lmtune.generate import GenerationSettings, Generator
from tiny_models import save_tiny_model

# Imported here, not only where used: a mutation run forks every mutant's tests from one process
# that collected the test modules, so these imports are paid once.
import peft.tuners.lora  # noqa: E402,F401
import transformers.models.llama.modeling_llama  # noqa: E402,F401
from peft import LoraConfig, get_peft_model  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

# the third passage is longer than the probe's 512-token window (the tiny Llama has 512 positions)
PROBE = ["The quick brown fox jumps over the lazy dog.", "How many orders were placed in 2021?",
         " ".join(f"order {i}" for i in range(400))]


def _alpaca(i):
    return {"instruction": f"List the customers of city {i}", "input": "", "output": f"SELECT name {i}"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-run")
    base = save_tiny_model(root / "base", "llama")
    tok = AutoTokenizer.from_pretrained(str(base))
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(str(base)),
                           LoraConfig(r=4, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1.0)  # an adapter that changes what the model says
    for name, recs in (("train", [_alpaca(i) for i in range(4)]), ("test", [_alpaca(i) for i in range(10, 13)])):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return SimpleNamespace(root=root, base=base, tok=tok, model=model.eval(), template=AlpacaTemplate())


def _cfg(tiny, *extra):
    return load_config(None, [f"model.name_or_path={tiny.base}", f"data.train={tiny.root / 'train.jsonl'}",
                              "data.format=alpaca", "data.template=alpaca", "eval.max_new_tokens=4",
                              "train.eval_batch_size=2", *extra])


def _generate(model, tiny, items):
    gen = Generator(model, tiny.tok, tiny.template)
    return gen.generate(items, GenerationSettings(max_new_tokens=4, greedy=True, batch_size=2))


def _probe(monkeypatch):
    monkeypatch.setattr(forgetting, "load_probe", lambda *a, **k: list(PROBE))


def _run_dir(tiny, tmp_path, *extra):
    """A run directory as train leaves it, without training: config.yaml + the adapter and tokenizer."""
    run = tmp_path / "run"
    tiny.model.save_pretrained(str(run / "adapter"))
    tiny.tok.save_pretrained(str(run / "adapter"))
    (run / "config.yaml").write_text(_cfg(tiny, *extra).to_yaml())
    return run


def _spy(monkeypatch, module, name, calls):
    real = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append((name, args, kwargs))
        return real(*args, **kwargs)
    monkeypatch.setattr(module, name, spy)
