"""Training end to end on tiny models built from configs: what changes, what is saved, resume,
reload, merge and generation with the trained template."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from lmtune.config import load_config
from lmtune.errors import ConfigError
from lmtune.train.recipe import train
from tiny_models import save_tiny_model, write_alpaca


def _cfg(model_dir, data, out, *extra):
    return load_config(None, [f"model.name_or_path={model_dir}", f"data.train={data}", f"output.dir={out}",
                              "data.val_split=0.2", "data.max_length=96", "train.max_steps=6",
                              "train.batch_size=2", "train.grad_accum=1", "train.learning_rate=5e-3",
                              "train.logging_steps=1", "train.save_steps=3", "train.save_total_limit=5",
                              "train.load_best=false", "train.warmup_ratio=0", "output.report=false",
                              "eval.after_train=false", *extra])


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    model_dir = save_tiny_model(root / "base", "llama")
    data = write_alpaca(root / "train.jsonl", 40)
    result = train(_cfg(model_dir, data, root / "run", "data.template=alpaca"), quiet=True)
    return model_dir, data, result


def _weights(path):
    return load_file(str(next(path.glob("*.safetensors"))))


@pytest.mark.parametrize("arch", ["qwen2", "mistral", "gpt2", "phi"])
def test_lora_changes_only_lora_parameters(tmp_path, arch):
    model_dir = save_tiny_model(tmp_path / "base", arch)
    data = write_alpaca(tmp_path / "train.jsonl", 24)
    res = train(_cfg(model_dir, data, tmp_path / "run", "train.max_steps=3"), quiet=True)
    adapter = _weights(tmp_path / "run" / "adapter")
    assert adapter and all("lora_" in k for k in adapter)
    # lora_B starts at zero: a trained adapter has moved it
    assert all(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_sd = _weights(model_dir)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(model_dir)), str(tmp_path / "run" / "adapter"))
    merged_names = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
                    for k, v in peft.state_dict().items() if "lora_" not in k}
    for name, tensor in base_sd.items():
        assert torch.equal(merged_names[name], tensor), f"frozen weight {name} changed"
    assert res.trainable_params == sum(v.numel() for v in adapter.values())


def test_full_changes_every_tensor(tmp_path):
    model_dir = save_tiny_model(tmp_path / "base", "llama")
    data = write_alpaca(tmp_path / "train.jsonl", 24)
    res = train(_cfg(model_dir, data, tmp_path / "run", "method=full", "train.max_steps=3"), quiet=True)
    before, after = _weights(model_dir), _weights(tmp_path / "run" / "model")
    assert set(before) == set(after)
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []
    assert res.trainable_params == res.total_params


def test_run_directory_and_loss_falls(lora_run):
    _, _, res = lora_run
    run = res.run_dir
    for name in ("config.yaml", "data_stats.json", "template.json", "env.json", "metrics.jsonl",
                 "train_summary.json", "adapter/adapter_config.json", "adapter/tokenizer.json"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    losses = [r["loss"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert losses[-1] < losses[0]
    stats = json.loads((run / "data_stats.json").read_text())
    assert stats["format"] == "alpaca" and stats["template"] == "alpaca"


def test_refuses_non_empty_output(lora_run, tmp_path):
    model_dir, data, res = lora_run
    with pytest.raises(ConfigError, match="is not empty"):
        train(_cfg(model_dir, data, res.run_dir), quiet=True)


def test_resume_matches_uninterrupted(lora_run, tmp_path):
    _, _, res = lora_run
    resumed = tmp_path / "resumed"
    shutil.copytree(res.run_dir, resumed)
    # Pretend the run died after step 3: later checkpoints and the final adapter never got written,
    # and a checkpoint that was being written has no completion marker.
    shutil.rmtree(resumed / "checkpoints" / "checkpoint-6")
    shutil.rmtree(resumed / "adapter")
    partial = resumed / "checkpoints" / "checkpoint-5"
    shutil.copytree(resumed / "checkpoints" / "checkpoint-3", partial)
    (partial / "lmtune_complete").unlink()
    cfg = load_config(res.run_dir / "config.yaml", [f"output.dir={resumed}"])
    train(cfg, resume=True, quiet=True)
    a, b = _weights(res.run_dir / "adapter"), _weights(resumed / "adapter")
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0)
    assert not partial.exists()


def test_reloaded_adapter_gives_same_logits_and_merge_matches(lora_run, tmp_path):
    from lmtune.merge import merge
    from lmtune.inference_loading import load_for_inference, open_path

    _, _, res = lora_run
    model, tok = load_for_inference(open_path(str(res.run_dir)))
    ids = tok("SELECT name FROM customers", return_tensors="pt").input_ids
    with torch.no_grad():
        first = model(input_ids=ids).logits
        second = load_for_inference(open_path(str(res.run_dir)))[0](input_ids=ids).logits
    assert torch.equal(first, second)
    out = merge(str(res.run_dir), str(tmp_path / "merged"))
    assert out.max_logit_diff <= 1e-4
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"))  # no lmtune, no peft
    with torch.no_grad():
        torch.testing.assert_close(plain(input_ids=ids).logits, first, atol=1e-4, rtol=0)
    assert "Merge check" in (tmp_path / "merged" / "README.md").read_text()


def test_generate_uses_the_trained_template(lora_run):
    from lmtune.generate import GenerationSettings, Generator

    _, _, res = lora_run
    gen = Generator.load(str(res.run_dir))
    assert gen.template.name == "alpaca"
    ids = gen.encode({"instruction": "Customers in Oslo?", "input": ""})
    assert gen.tokenizer.decode(ids).endswith("### Instruction:\nCustomers in Oslo?\n\n### Response:\n")
    out = gen.generate(["Customers in Oslo?"], GenerationSettings(max_new_tokens=5))
    assert isinstance(out[0], str)


@pytest.mark.parametrize("given, expect", [
    (["train.save_steps=5"], ("steps", 5, "steps", 5)),        # save alone: evaluate at each save
    (["train.eval_steps=4"], ("steps", 4, "steps", 4)),        # eval alone: save at each evaluation
    ([], ("epoch", None, "epoch", None)),
    (["train.save_steps=5", "train.load_best=false"], ("epoch", None, "steps", 5)),
])
def test_best_model_needs_an_evaluation_at_every_save(tmp_path, given, expect):
    """The Trainer refuses load_best_model_at_end with eval per epoch and saves per step count
    (a traceback after the model loaded); lmtune aligns the one count the user set."""
    from lmtune.run.layout import RunDir
    from lmtune.train.recipe import training_arguments

    cfg = load_config(None, ["data.task=sql", f"output.dir={tmp_path / 'run'}", *given,
                             "train.learning_rate=1e-3", "train.epochs=1"])  # auto: resolved by train()
    args = training_arguments(cfg, RunDir(cfg.output.dir), "fp32", "cpu", has_eval=True)
    got = (args.eval_strategy.value, args.eval_steps if args.eval_strategy.value == "steps" else None,
           args.save_strategy.value, args.save_steps if args.save_strategy.value == "steps" else None)
    assert got == expect
