"""train.objective dpo/orpo/kto end to end on a tiny Llama: what moves, what is saved, what the
run starts from, and the config's messages."""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file

from lmtune.config import load_config
from lmtune.errors import ConfigError
from lmtune.train.recipe import train
from tiny_models import save_tiny_model, save_tiny_run

CITIES = ["Berlin", "Paris", "Rome", "Oslo", "Lima", "Quito", "Cairo", "Delhi"]


def write_pairs(path, n=24, kto=False):
    rng = random.Random(0)
    rows = []
    for i in range(n):
        city = rng.choice(CITIES)
        good, bad = f"SELECT name FROM customers WHERE city = '{city}';", "I do not know."
        prompt = f"Customers in {city}? ({i})"
        if kto:
            rows.append({"prompt": prompt, "completion": good if i % 2 else bad, "label": bool(i % 2)})
        else:
            rows.append({"prompt": prompt, "chosen": good, "rejected": bad})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cfg(model, data, out, *extra):
    return load_config(None, [f"model.name_or_path={model}", f"data.train={data}", f"output.dir={out}",
                              "data.val_split=0", "data.max_length=96", "train.max_steps=6",
                              "train.batch_size=2", "train.grad_accum=1", "train.learning_rate=5e-3",
                              "train.logging_steps=1", "train.warmup_ratio=0", "output.report=false",
                              "eval.after_train=false", *extra])


def _rows(run, key):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r[key] for r in rows if key in r]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("base") / "base", "llama")


def test_dpo_lora_moves_margins_up_and_trains_only_the_adapter(base, tmp_path):
    run = tmp_path / "run"
    res = train(_cfg(base, write_pairs(tmp_path / "pairs.jsonl"), run, "train.objective=dpo"), quiet=True)
    margins, accuracies = _rows(run, "rewards/margins"), _rows(run, "rewards/accuracies")
    assert len(margins) == 6
    assert margins[0] == 0.0   # step 1: the policy is the reference (adapter off == new adapter)
    assert margins[-1] > margins[1] > 0
    assert accuracies[-1] == 1.0
    adapter = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert adapter and all("lora_" in k for k in adapter)
    assert all(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    assert not (run / "adapter" / "ref").exists()   # no second adapter saved as a reference
    assert res.trainable_params == sum(v.numel() for v in adapter.values())
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["objective"] == "dpo" and summary["global_step"] == 6
    from lmtune.report.build import write_report

    html = write_report(run).read_text()
    assert "Objective: dpo, chosen vs rejected" in html and f"margin {margins[-1]:.4f}"[:12] in html


def test_dpo_sft_weight_adds_the_chosen_answers_loss_and_keeps_them_likely(base, tmp_path):
    """pref.sft_weight: TRL's sft loss (the chosen answers' NLL) beside the preference loss; the
    same run with it ends with more likely chosen answers than without it."""
    from lmtune.train.objectives import objective_config

    common = {"output_dir": str(tmp_path / "args"), "report_to": [], "use_cpu": True, "bf16": False}
    cfg = _cfg(base, write_pairs(tmp_path / "pairs.jsonl"), tmp_path / "x", "train.objective=dpo",
               "pref.sft_weight=0.5")
    args = objective_config(cfg, common)
    assert args.loss_type == ["sigmoid", "sft"] and args.loss_weights == [1.0, 0.5]
    plain = objective_config(_cfg(base, tmp_path / "pairs.jsonl", tmp_path / "y", "train.objective=dpo"),
                             common)
    assert plain.loss_type == ["sigmoid"] and plain.loss_weights is None
    chosen = {}
    for weight in (0.0, 1.0):
        run = tmp_path / f"run-{weight}"
        train(_cfg(base, tmp_path / "pairs.jsonl", run, "train.objective=dpo", f"pref.sft_weight={weight}"),
              quiet=True)
        chosen[weight] = _rows(run, "logps/chosen")
    assert chosen[1.0][0] == pytest.approx(chosen[0.0][0], abs=1e-4)   # the same start
    assert chosen[1.0][-1] > chosen[0.0][-1]


@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_a_partial_rejected_answer_is_trained_without_an_end(base, tmp_path, monkeypatch, objective):
    """rejected_partial (lmtune pairs --cut): the trainer's rejected tokens are the answer's own, with
    no end-of-turn and no eos after them; unmarked pairs keep both. The chosen side is untouched."""
    from lmtune.train import objectives

    built = []

    def keep(*args, **kwargs):   # the real build; the test only keeps what it returns
        built.append(objectives_build(*args, **kwargs))
        return built[-1]

    objectives_build = objectives.build
    monkeypatch.setattr(objectives, "build", keep)
    rows = [json.loads(line) for line in write_pairs(tmp_path / "pairs.jsonl", n=4).read_text().splitlines()]
    rows = [{**r, "rejected_partial": True} if i % 2 else r for i, r in enumerate(rows)]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    train(_cfg(base, tmp_path / "pairs.jsonl", tmp_path / "run", f"train.objective={objective}",
               "train.max_steps=1"), quiet=True)
    trainer = built[0]
    tok, data = trainer.processing_class, trainer.train_dataset
    rejected = data["rejected_ids"] if objective == "dpo" else [
        [t for t in ids if t != -100] for ids in data["rejected_labels"]]
    chosen = data["chosen_ids"] if objective == "dpo" else [
        [t for t in ids if t != -100] for ids in data["chosen_labels"]]
    for ids, good, marked in zip(rejected, chosen, data["rejected_partial"]):
        assert good[-1] == tok.eos_token_id
        if marked:
            assert tok.decode(ids).strip() == "I do not know."
        else:
            assert ids[-1] == tok.eos_token_id and tok.decode(ids).strip() != "I do not know."


def test_open_partial_takes_the_eos_off_marked_rows_only():
    from datasets import Dataset

    from lmtune.train.objectives import open_partial

    rows = Dataset.from_list([
        {"rejected_partial": True, "rejected_input_ids": [5, 6, 1], "rejected_attention_mask": [1, 1, 1],
         "rejected_labels": [-100, 6, 1]},
        {"rejected_partial": False, "rejected_input_ids": [5, 6, 1], "rejected_attention_mask": [1, 1, 1],
         "rejected_labels": [-100, 6, 1]},
        {"rejected_partial": True, "rejected_input_ids": [5, 6, 7], "rejected_attention_mask": [1, 1, 1],
         "rejected_labels": [-100, 6, 7]}])   # truncated: no eos at the end, nothing to take off
    out = open_partial(rows, "orpo", eos_id=1)
    assert out["rejected_input_ids"] == [[5, 6], [5, 6, 1], [5, 6, 7]]
    assert out["rejected_labels"] == [[-100, 6], [-100, 6, 1], [-100, 6, 7]]
    assert out["rejected_attention_mask"] == [[1, 1], [1, 1, 1], [1, 1, 1]]
    assert open_partial(rows, "kto", eos_id=1) is rows   # kto has no pairs


@pytest.mark.parametrize("objective", ["orpo", "kto"])
def test_orpo_and_kto_complete_and_write_an_adapter(base, tmp_path, objective):
    data = write_pairs(tmp_path / "data.jsonl", kto=objective == "kto")
    run = tmp_path / "run"
    # the CPU's default micro-batch (1 row) for orpo; kto's default is 2 (its KL term needs a neighbour)
    cfg = _cfg(base, data, run, f"train.objective={objective}", "train.max_steps=3")
    cfg.train.batch_size = None
    train(cfg, quiet=True)
    adapter = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert all(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    assert len(_rows(run, "rewards/margins")) == 3


def test_full_dpo_changes_weights_against_a_frozen_reference(base, tmp_path):
    run = tmp_path / "run"
    train(_cfg(base, write_pairs(tmp_path / "pairs.jsonl"), run, "train.objective=dpo", "method=full",
               "train.learning_rate=1e-3", "train.max_steps=4"), quiet=True)
    margins = _rows(run, "rewards/margins")
    # a reference that trained along with the policy would keep every margin at 0
    assert margins[0] == 0.0 and margins[-1] > 0
    before, after = load_file(str(base / "model.safetensors")), load_file(str(run / "model" / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_sft_then_dpo_starts_from_the_sft_runs_merged_weights(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lmtune.inference_loading import load_for_inference, open_path

    sft = save_tiny_run(tmp_path / "sft", "lora")      # a random adapter: merging moves the logits
    base = tmp_path / "sft" / "base"
    run = tmp_path / "dpo"
    train(_cfg(sft, write_pairs(tmp_path / "pairs.jsonl"), run, "train.objective=dpo", "train.max_steps=2"),
          quiet=True)
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base)),
                                       str(sft / "adapter")).merge_and_unload().eval()
    start, _ = load_for_inference(open_path(str(run)), use_adapter=False)   # the DPO run's base
    assert torch.allclose(_logits(start, ids), _logits(merged, ids), atol=1e-5)
    plain = AutoModelForCausalLM.from_pretrained(str(base)).eval()
    assert not torch.allclose(_logits(start, ids), _logits(plain, ids), atol=1e-3)
    started = json.loads((run / "started_from.json").read_text())
    assert started["run"] == str(sft.resolve()) and started["weights"] == "adapter merged into its base"
    assert json.loads((run / "template.json").read_text())["name"] == "alpaca"   # the SFT run's template
    tuned, _ = load_for_inference(open_path(str(run)))       # what `lmtune generate RUN` loads
    assert not torch.allclose(_logits(tuned, ids), _logits(merged, ids), atol=1e-6)


@pytest.mark.parametrize("override,expected", [
    ("pref.bta=0.2", "pref.bta: unknown key (did you mean 'pref.beta'?)"),
    ("train.objectiv=dpo", "train.objectiv: unknown key (did you mean 'train.objective'?)"),
    ("train.objective=ppo", "train.objective: got 'ppo', allowed: sft, dpo, orpo, kto, grpo"),
    ("pref.beta=0", "pref.beta: got 0.0, must be > 0.0"),
    ("pref.loss_type=sigmod", "pref.loss_type: got 'sigmod', allowed: sigmoid, ipo, hinge"),
    ("pref.sft_weight=-1", "pref.sft_weight: got -1.0, must be >= 0.0"),
    ("train.batch_size=1 train.objective=kto", "train.batch_size: got 1; kto compares each answer"),
])
def test_objective_key_mistakes_name_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.task=sql", *override.split()])
    assert any(p.startswith(expected) for p in err.value.problems), err.value.problems


def test_estimate_counts_the_reference_copy_of_full_dpo_only():
    from lmtune.estimate import EstimateRequest, estimate

    def memory(method, objective):
        return estimate(EstimateRequest(model="tiny", method=method, objective=objective, gpu="cpu")).memory

    full_dpo, full_sft = memory("full", "dpo"), memory("full", "sft")
    assert full_dpo.reference == full_dpo.weights > 0
    assert full_sft.reference == 0 and memory("lora", "dpo").reference == 0 and memory("full", "orpo").reference == 0
    assert full_dpo.peak > full_sft.peak + full_dpo.reference   # the reference and two rows per pair


def test_bad_pairs_stop_train_before_the_run_directory(base, tmp_path, capsys):
    from lmtune.cli import main

    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "a?", "chosen": "x", "rejected": "y"}) + "\n"
                    + json.dumps({"prompt": "b?", "chosen": "", "rejected": "y"}) + "\n")
    rc = main(["train", f"model.name_or_path={base}", f"data.train={data}", "train.objective=dpo",
               f"output.dir={tmp_path / 'run'}"])
    assert rc == 2
    assert f"{data}:2: empty string (chosen)" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_run_with_missing_weights_is_refused_as_a_start(tmp_path, capsys):
    from lmtune.cli import main

    sft = save_tiny_run(tmp_path / "sft", "lora")
    (sft / "adapter" / "adapter_model.safetensors").unlink()
    rc = main(["train", f"model.name_or_path={sft}", f"data.train={write_pairs(tmp_path / 'p.jsonl')}",
               "train.objective=dpo", f"output.dir={tmp_path / 'run'}"])
    assert rc == 2
    assert f"model.name_or_path: {sft / 'adapter' / 'adapter_model.safetensors'}: missing" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_the_evaluation_after_a_preference_run_is_the_one_after_sft(base, tmp_path):
    from tiny_models import write_alpaca

    run = tmp_path / "run"
    test = write_alpaca(tmp_path / "test.jsonl", 4, seed=5)
    cfg = _cfg(base, write_pairs(tmp_path / "kto.jsonl", kto=True), run, "train.objective=kto", "train.max_steps=2",
               "eval.after_train=true", f"data.test={test}", "eval.max_new_tokens=8")
    train(cfg, quiet=True)
    ev = json.loads((run / "eval.json").read_text())
    assert ev["task"]["tuned"] and ev["task"]["base"]              # task metrics, base (the start) vs tuned
    assert ev["forgetting"]["verdict"] in ("ok", "warning", "forgotten")
    assert len((run / "eval_predictions.jsonl").read_text().splitlines()) == 4
