"""Evaluation on real trained runs (tiny models, real files): loss/perplexity, task metrics for
tuned and base on the same prompts, eval.json, the forgetting verdict on both sides, and the CLI.

Two runs are trained once per session (`trained_runs`, tests/helpers/eval_runs.py, shared with
test_report/test_compare); each ends with train's own final evaluation (eval.json):
  gentle  LoRA, small LR, 2 steps, on the bundled SQL task   -> forgetting "ok"
  harsh   full fine-tune, LR 0.3, 6 steps, on alpaca data    -> forgetting "forgotten"
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from lmtune.cli import main
from lmtune.evaluate import EVAL_FILE, PREDICTIONS_FILE, evaluate_run, verdict
from lmtune.evaluate.forgetting import compare_perplexity, load_probe
from lmtune.evaluate.perplexity import IGNORE, labels_from_masks, sequence_loss, text_loss
from eval_runs import trained_runs
from lmtune.tasks import task_files


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine two spinning OpenMP threads made these tiny
    models ~10x slower (measured). Restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return trained_runs(tmp_path_factory)


def _eval_json(run) -> dict:
    return json.loads((run / EVAL_FILE).read_text())


# ---------------------------------------------------------------- verdict (pure)

@pytest.mark.parametrize("ratio, expected", [
    (0.5, "ok"), (1.0, "ok"), (1.5, "ok"),                 # up to warn (inclusive): ok
    (1.5001, "warning"), (2.9, "warning"), (3.0, "warning"),
    (3.0001, "forgotten"), (110.0, "forgotten"), (float("nan"), "forgotten"),
])
def test_verdict_on_both_sides_of_each_threshold(ratio, expected):
    assert verdict(ratio, 1.5, 3.0) == expected


def test_verdict_follows_configured_thresholds():
    assert verdict(1.2, 1.1, 2.0) == "warning"
    assert verdict(1.2, 1.3, 2.0) == "ok"
    assert verdict(2.5, 1.3, 2.0) == "forgotten"
    r = compare_perplexity(40.0, 70.0, 1.5, 3.0, passages=3, tokens=99, probe="p")
    assert r.ratio == pytest.approx(1.75) and r.verdict == "warning"
    assert "40.0 -> 70.0" in r.explain()


# ---------------------------------------------------------------- loss (real tiny model)

def test_labels_follow_the_completion_mask():
    ex = {"input_ids": [5, 6, 7, 8], "completion_mask": [0, 0, 1, 1]}
    assert labels_from_masks(ex) == [IGNORE, IGNORE, 7, 8]
    assert labels_from_masks({"input_ids": [1, 2], "labels": [-100, 2]}) == [-100, 2]


def test_loss_is_token_weighted_and_padding_free(runs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(runs["base"]))
    tok = AutoTokenizer.from_pretrained(str(runs["base"]))
    tok.padding_side = "left"   # what generation leaves behind; loss must not care
    texts = load_probe(limit=5)
    batched = text_loss(model, tok, texts, max_length=64, batch_size=5)
    one_by_one = text_loss(model, tok, texts, max_length=64, batch_size=1)
    assert batched.loss == pytest.approx(one_by_one.loss, rel=1e-5)
    # the same number from the logits by hand
    nll, n = 0.0, 0
    for t in texts:
        ids = tok(t, truncation=True, max_length=64, return_tensors="pt").input_ids
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        nll += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        n += ids.shape[1] - 1
    assert batched.tokens == n
    assert batched.loss == pytest.approx(nll / n, rel=1e-5)
    assert batched.perplexity == pytest.approx(math.exp(nll / n), rel=1e-5)
    masked = sequence_loss(model, [([1, 2, 3, 4], [IGNORE, IGNORE, 3, 4])], tok.pad_token_id)
    assert masked.tokens == 2


# ---------------------------------------------------------------- real runs

def test_train_ends_with_eval_json_for_the_bundled_task(runs):
    ev = _eval_json(runs["gentle"])
    assert ev["method"] == "lora"
    val = ev["validation"]
    assert val["source"] == "validation split" and val["tuned"]["examples"] > 0
    assert val["tuned"]["perplexity"] == pytest.approx(math.exp(val["tuned"]["loss"]), rel=1e-6)
    # one validation loss per run: train_summary.json and eval.json carry the same number
    summary = json.loads((runs["gentle"] / "train_summary.json").read_text())
    assert (summary["eval_loss"], summary["eval_perplexity"]) == (val["tuned"]["loss"], val["tuned"]["perplexity"])
    task = ev["task"]
    assert task["name"] == "sql" and task["primary"] == "execution_accuracy"
    assert task["examples"] == 4 and task["source"].endswith("sql/test.jsonl")
    assert set(task["tuned"]) == set(task["base"]) == {"execution_accuracy", "exact_match", "executable"}
    assert len(ev["samples"]) == 4
    assert all({"prompt", "reference", "tuned", "base"} <= set(s) for s in ev["samples"])
    assert ev["samples"][0]["reference"].startswith("SELECT")
    lines = (runs["gentle"] / PREDICTIONS_FILE).read_text().splitlines()
    assert len(lines) == 4 and "tuned_raw" in json.loads(lines[0])


def test_gentle_lora_passes_the_forgetting_check(runs):
    f = _eval_json(runs["gentle"])["forgetting"]
    assert f["verdict"] == "ok"
    assert f["ratio"] == pytest.approx(f["tuned_perplexity"] / f["base_perplexity"])
    assert f["passages"] == len(load_probe())


def test_aggressive_full_fine_tune_is_flagged_as_forgotten(runs):
    f = _eval_json(runs["harsh"])["forgetting"]
    assert f["verdict"] == "forgotten" and f["ratio"] > f["fail_at"]


def test_full_run_base_is_the_original_model(runs):
    gentle, harsh = _eval_json(runs["gentle"]), _eval_json(runs["harsh"])
    # Both runs start from the same tiny model: the full run's base (loaded from model.name_or_path)
    # must be exactly the base seen through the LoRA run's disabled adapter.
    assert harsh["forgetting"]["base_perplexity"] == pytest.approx(
        gentle["forgetting"]["base_perplexity"], rel=1e-5)
    val = harsh["validation"]
    assert val["tuned"]["loss"] < val["base"]["loss"]          # it learned the alpaca SQL shape
    task = harsh["task"]
    assert task["name"] == "generic" and set(task["tuned"]) == {"exact_match", "rouge_l"}
    assert task["source"].endswith("test.jsonl") and task["examples"] == 4
    assert task["tuned"]["rouge_l"] > task["base"]["rouge_l"]


def test_eval_of_the_saved_run_matches_the_in_memory_one(runs, tmp_path):
    """`lmtune eval` reloads the adapter and rebuilds the validation split from config.yaml: the
    numbers must be the ones train measured on the model it had in memory."""
    run = shutil.copytree(runs["gentle"], tmp_path / "run")
    after_train = _eval_json(run)
    again = evaluate_run(run, base=True, num_samples=4, progress=False)
    for side in ("tuned", "base"):
        assert again["validation"][side]["loss"] == pytest.approx(after_train["validation"][side]["loss"], rel=1e-5)
        assert again["validation"][side]["tokens"] == after_train["validation"][side]["tokens"]
        assert again["task"][side] == after_train["task"][side]
    assert again["forgetting"]["tuned_perplexity"] == pytest.approx(
        after_train["forgetting"]["tuned_perplexity"], rel=1e-5)
    assert [s["tuned"] for s in again["samples"]] == [s["tuned"] for s in after_train["samples"]]


def test_eval_cli(runs, capsys, tmp_path):
    run = shutil.copytree(runs["harsh"], tmp_path / "run")   # leave the shared run's eval.json alone
    code = main(["eval", str(run), "--test", str(runs["test"]), "--num-samples", "2",
                 "--max-new-tokens", "6", "--no-forgetting"])
    out = capsys.readouterr().out
    assert code == 0
    assert "task generic: 2 test examples" in out and "rouge_l" in out
    ev = _eval_json(run)
    assert ev["validation"]["source"].startswith("test: ")
    assert ev["forgetting"] is None and ev["task"]["base"] is None and ev["task"]["examples"] == 2
    (tmp_path / "empty").mkdir()
    assert main(["eval", str(tmp_path / "empty")]) == 2            # not a run: user error
    assert "not a run" in capsys.readouterr().err
    assert main(["eval", str(run), "--num-samples", "0"]) == 2


def test_merged_generation_equals_unmerged_and_restores_weights(runs):
    """Eval merges a LoRA adapter while generating (faster); answers must not change and the
    weights must come back (up to float rounding) for the base measurement that follows."""
    from lmtune.data import load_split
    from lmtune.evaluate.run import inference_mode, merged_adapter
    from lmtune.generate import GenerationSettings, Generator

    gen = Generator.load(str(runs["gentle"]))
    examples = load_split([task_files("sql")["test"]], "auto", "test").examples[:4]
    settings = GenerationSettings(max_new_tokens=8, batch_size=2)
    before = {n: p.detach().clone() for n, p in gen.model.named_parameters()}
    with inference_mode(gen.model):
        plain = gen.generate(examples, settings)
        with merged_adapter(gen.model):
            merged = gen.generate(examples, settings)
    assert merged == plain
    worst = max((p - before[n]).abs().max().item() for n, p in gen.model.named_parameters())
    assert worst <= 1e-6
