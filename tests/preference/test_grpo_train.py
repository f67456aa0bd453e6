"""train.objective grpo end to end on a tiny Llama: rewards logged per function, the adapter (or
the full weights) moves, and the KL is measured against the frozen start."""

from __future__ import annotations

import json

import pytest
import yaml
from safetensors.torch import load_file

from lmtune.config import load_config
from lmtune.train.recipe import train
from tiny_models import save_tiny_model, save_tiny_run, write_alpaca

# a reward with spread inside every group of random samples, so every step has advantages
REWARD = "def spaces(prompts, completions, **kw):\n    return [float(c.count(' ')) for c in completions]\n"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("base") / "base", "llama")


def _run(base, tmp_path, *extra):
    (tmp_path / "rewards.py").write_text(REWARD)
    cfg = load_config(None, [
        f"model.name_or_path={base}", f"data.train={write_alpaca(tmp_path / 'd.jsonl', 8)}",
        f"output.dir={tmp_path / 'run'}", "data.val_split=0", "train.objective=grpo", "train.max_steps=3",
        "train.grad_accum=1", "train.learning_rate=5e-2", "train.logging_steps=1", "train.warmup_ratio=0",
        "output.report=false", "eval.after_train=false", "rl.max_new_tokens=8", "rl.beta=0.04",
        f"rl.reward=[task, {tmp_path / 'rewards.py'}:spaces]", *extra])
    train(cfg, quiet=True)
    run = tmp_path / "run"
    return run, [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_grpo_lora_logs_each_reward_and_trains_only_the_adapter(base, tmp_path):
    # with rag.docs, each prompt carries its passage, as SFT's do (tests/rag/test_rag_training.py)
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": c.lower(), "text": f"{c}: customers live in {c}."}) + "\n"
                            for c in ("Berlin", "Paris", "Rome", "Oslo", "Lima", "Quito", "Cairo", "Delhi")))
    run, rows = _run(base, tmp_path, f"rag.docs={docs}", "rag.top_k=1", "rag.chunk_tokens=32",
                     "rag.chunk_overlap=0")
    assert json.loads((run / "data_stats.json").read_text())["augment"]["rag_docs"] == str(docs)
    steps = [r for r in rows if "reward" in r]
    assert len(steps) == 3
    assert all("rewards/task/mean" in r and "rewards/spaces/std" in r and "kl" in r for r in steps)
    assert any(r["reward_std"] > 0 for r in steps)
    assert steps[0]["kl"] == 0.0    # step 1: the policy is the reference (new adapter == adapter off)
    adapter = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    assert not any(".ref." in k for k in adapter)   # no second adapter as the reference
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["train"]["batch_size"] == cfg["rl"]["num_generations"] == 4   # one prompt's group per micro-batch
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["objective"] == "grpo"
    # a random tiny model never answers its prompt right: the run says so after its first quarter
    assert [w.split(":")[0] for w in summary["warnings"]] == ["GRPO steps 1-1"]
    assert "almost no task reward" in summary["warnings"][0]


def test_full_grpo_after_an_sft_run_measures_kl_against_that_runs_weights(tmp_path):
    sft = save_tiny_run(tmp_path / "sft", "lora")     # a random adapter: its merged weights are not the base
    run, rows = _run(sft, tmp_path, "method=full")
    kl = [r["kl"] for r in rows if "kl" in r]
    # 0 at step 1: the reference is the start (TRL's own reload of the base would differ from the
    # merged SFT weights); then > 0: a reference that trained along would stay at 0
    assert kl[0] == 0.0 and kl[-1] > 0
    assert (run / "model" / "model.safetensors").is_file()
