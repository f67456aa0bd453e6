"""Settings that must reach the libraries unchanged, each pinned by literal values: the learning
rate per method and what reaches TRL's SFTConfig, LoRA r/alpha/rsLoRA on peft's modules, the
forgetting thresholds from the config to the verdict, and merge's logit check (which refuses)."""

from __future__ import annotations

import math

import pytest
import torch

from lmtune.cli import main
from lmtune.config import load_config
from lmtune.run.layout import RunDir
from tiny_models import save_random_lora_adapter, save_tiny_model


# ---------------------------------------------------------------- learning rate

def test_default_learning_rate_table_has_the_literal_values():
    for method, lr in (("full", 2e-5), ("lora", 2e-4), ("qlora", 2e-4)):
        # `null`: the per-method table (the default is `auto`, resolved by lmtune/train/hparams.py and tested there)
        assert load_config(None, ["data.task=sql", f"method={method}", "train.learning_rate=null"]).learning_rate == lr


@pytest.mark.parametrize("method, overrides, expected", [
    ("full", ["train.learning_rate=3e-5"], 3e-5),
    ("lora", ["train.learning_rate=7e-4"], 7e-4),
    ("full", ["train.learning_rate=null"], 2e-5),
    ("lora", ["train.learning_rate=null"], 2e-4),
])
def test_the_learning_rate_reaches_the_trainer_arguments(tmp_path, method, overrides, expected):
    from lmtune.train.recipe import training_arguments

    cfg = load_config(None, ["data.task=sql", f"method={method}", f"output.dir={tmp_path / 'run'}",
                             "train.max_steps=7", "train.warmup_steps=2", "train.grad_accum=3", *overrides])
    args = training_arguments(cfg, RunDir(cfg.output.dir), "fp32", "cpu", has_eval=False)
    assert args.learning_rate == expected
    assert (args.max_steps, args.warmup_steps, args.gradient_accumulation_steps) == (7, 2, 3)
    assert args.optim.value == "adamw_torch" and args.use_cpu


# ---------------------------------------------------------------- LoRA on peft's modules

@pytest.mark.parametrize("rslora, scaling", [(False, 16 / 4), (True, 16 / math.sqrt(4))])
def test_lora_rank_alpha_and_rslora_reach_the_peft_modules(tmp_path, rslora, scaling):
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    from lmtune.train import methods

    base = save_tiny_model(tmp_path / "base", "llama")
    cfg = load_config(None, [f"model.name_or_path={base}", "data.task=sql", "method=lora", "lora.r=4",
                             "lora.alpha=16", "lora.dropout=0.25", f"lora.use_rslora={str(rslora).lower()}",
                             "train.gradient_checkpointing=false"])
    model = methods.prepare(AutoModelForCausalLM.from_pretrained(str(base)), cfg)
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert len(layers) == 2 * 7  # all-linear: q, k, v, o, gate, up, down in each of 2 layers
    for m in layers:
        assert m.r["default"] == 4 and m.lora_alpha["default"] == 16
        assert m.scaling["default"] == pytest.approx(scaling)
        assert m.lora_A["default"].weight.shape[0] == 4 and m.lora_B["default"].weight.shape[1] == 4
        assert m.lora_dropout["default"].p == 0.25 and not m.use_dora["default"]
    assert type(model).__name__ == "PeftModelForCausalLM"  # task_type CAUSAL_LM
    assert model.peft_config["default"].bias == "none"
    assert not model.get_input_embeddings()(torch.tensor([[1, 2]])).requires_grad  # no checkpointing hook


def test_lora_bias_dora_and_checkpointing_reach_peft(tmp_path):
    from peft.tuners.lora import LoraLayer
    from transformers import AutoModelForCausalLM

    from lmtune.train import methods

    base = save_tiny_model(tmp_path / "base", "gpt2")  # GPT-2's Conv1D layers have biases
    cfg = load_config(None, [f"model.name_or_path={base}", "data.task=sql", "method=lora", "lora.r=2",
                             "lora.use_dora=true", "lora.bias=all", "train.gradient_checkpointing=true"])
    model = methods.prepare(AutoModelForCausalLM.from_pretrained(str(base)), cfg)
    assert all(m.use_dora["default"] for m in model.modules() if isinstance(m, LoraLayer))
    biases = [p for n, p in model.named_parameters() if n.endswith(".bias")]
    assert biases and all(p.requires_grad for p in biases)
    # checkpointed blocks need inputs that require grad although the embeddings are frozen
    emb = model.get_input_embeddings()(torch.tensor([[1, 2, 3]]))
    assert emb.requires_grad


LLAMA_LINEAR = "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj"


@pytest.mark.parametrize("arch, target, layers", [
    ("llama", "nonexistent_proj", LLAMA_LINEAR),
    ("gpt2", "nonexistent_proj", "c_attn, c_fc, c_proj, lm_head"),  # transformers' Conv1D layers are listed too
    ("llama", "input_layernorm", LLAMA_LINEAR),  # a module peft cannot adapt: "Target module ... is not supported"
])
def test_lora_targets_missing_from_the_model_are_a_config_error(tmp_path, arch, target, layers):
    from transformers import AutoModelForCausalLM

    from lmtune.train import methods
    from lmtune.errors import ConfigError

    base = save_tiny_model(tmp_path / "base", arch)
    cfg = load_config(None, [f"model.name_or_path={base}", "data.task=sql", "method=lora",
                             f"lora.target_modules=[{target}]"])
    with pytest.raises(ConfigError) as err:
        methods.prepare(AutoModelForCausalLM.from_pretrained(str(base)), cfg)
    assert err.value.render() == (f"error: lora.target_modules: ['{target}'] not found in this model\n"
                                  f"  linear layers in this model: {layers}\n  or use all-linear")


# ---------------------------------------------------------------- forgetting verdict from the config

@pytest.mark.parametrize("warn, fail, expected", [
    (1.2, 2.0, "warning"),     # 1.5 lies between
    (1.6, 2.0, "ok"),
    (1.1, 1.4, "forgotten"),
])
def test_forgetting_thresholds_from_the_config_decide_the_verdict(warn, fail, expected):
    from lmtune.evaluate.perplexity import LossResult
    from lmtune.evaluate.run import EvalSettings, _assemble, _Side

    cfg = load_config(None, ["data.task=sql", f"eval.forgetting_warn={warn}", f"eval.forgetting_fail={fail}"])
    base = _Side(probe=LossResult(math.log(20.0), 20.0, 500, 10))
    tuned = _Side(probe=LossResult(math.log(30.0), 30.0, 500, 10))
    out = _assemble(cfg, None, None, tuned, base, ["probe text"], EvalSettings(progress=False), 1.0)
    f = out["forgetting"]
    assert f["ratio"] == pytest.approx(1.5) and (f["warn_at"], f["fail_at"]) == (warn, fail)
    assert f["verdict"] == expected


# ---------------------------------------------------------------- merge refuses a wrong merge

@pytest.fixture
def adapter(tmp_path):
    """A LoRA adapter with large random B (so it moves the logits a lot) on a tiny Llama."""
    base = save_tiny_model(tmp_path / "base", "llama")
    return save_random_lora_adapter(base, tmp_path / "adapter", seed=1, std=0.5)


def test_merge_reports_a_tiny_difference_and_writes_the_model(adapter, tmp_path, capsys):
    assert main(["merge", str(adapter), "--out", str(tmp_path / "merged")]) == 0
    out = capsys.readouterr().out
    diff = float(out.split("max |logit diff| merged vs base+adapter: ", 1)[1].split()[0])
    assert diff <= 1e-5
    assert (tmp_path / "merged" / "model.safetensors").is_file()


def test_merge_refuses_a_real_mismatch_and_writes_nothing(adapter, tmp_path, monkeypatch, capsys):
    """A merge that drops the adapter (peft's unload instead of merge_and_unload) is a real bug:
    the logits move by far more than the tolerance, so merge exits 2 with nothing written."""
    from peft.tuners.lora import LoraModel

    monkeypatch.setattr(LoraModel, "merge_and_unload", lambda self, *a, **k: self.unload())
    assert main(["merge", str(adapter), "--out", str(tmp_path / "merged")]) == 2
    err = capsys.readouterr().err
    assert "logits differ from base+adapter by" in err and "tolerance" in err and "nothing was written" in err
    assert not (tmp_path / "merged").exists() and not (tmp_path / ".merged.staging").exists()


# ---------------------------------------------------------------- load_best

def test_load_best_ends_with_the_best_checkpoints_weights(tmp_path):
    """Full fine-tune at a constant learning rate high enough that the validation loss gets worse
    after the first step (5.67, 6.80, 6.99 here): the best checkpoint is not the last one."""
    import json

    from safetensors.torch import load_file

    from lmtune.train.recipe import train
    from tiny_models import write_alpaca

    base = save_tiny_model(tmp_path / "base", "llama")
    data = write_alpaca(tmp_path / "train.jsonl", 24)
    out = tmp_path / "run"
    cfg = load_config(None, [f"model.name_or_path={base}", f"data.train={data}", f"output.dir={out}",
                             "method=full", "data.val_split=0.25", "data.max_length=96", "data.template=alpaca",
                             "train.max_steps=3", "train.batch_size=2", "train.grad_accum=1",
                             "train.learning_rate=0.3", "train.scheduler=constant", "train.warmup_ratio=0", "train.logging_steps=1",
                             "train.eval_steps=1", "train.save_steps=1", "train.save_total_limit=5",
                             "train.load_best=true", "train.threads=1", "output.report=false",
                             "eval.after_train=false", "eval.final_val_loss=true"])
    result = train(cfg, quiet=True)
    evals: dict[int, float] = {}  # the first evaluation at each step (_save evaluates again at the end)
    for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()):
        if "eval_loss" in row:
            evals.setdefault(row["step"], row["eval_loss"])
    best = min(evals, key=evals.get)
    assert best != 3 and evals[3] > evals[best] + 0.1  # the premise: the last checkpoint is worse
    final = load_file(str(out / "model" / "model.safetensors"))
    for step, expect_equal in ((best, True), (3, False)):
        saved = load_file(str(out / "checkpoints" / f"checkpoint-{step}" / "model.safetensors"))
        assert all(torch.equal(final[k], saved[k]) for k in saved) is expect_equal, step
    assert result.metrics["eval_loss"] == pytest.approx(evals[best], abs=1e-5)
