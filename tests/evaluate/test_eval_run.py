"""lmtune/evaluate/run.py and evaluate/__init__.py on a tiny LoRA model with a random adapter that
changes what it says (built here, no training): the model-state context managers, which test set is
used, one whole evaluate_model call checked against generations and losses computed by other paths
(lmtune.generate, perplexity.text_loss); then the same seen from their callers: evaluate_run on a
run directory (config.yaml + adapter) and on a plain model, final_evaluation and validation_loss as
train calls them, loss_data, and what evaluate_model hands the generator and the loss functions
(spied on, the real ones still run)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from lmtune.config import load_config
from lmtune.data.formats import Example
from lmtune.data.holdout import HELDOUT_FILE
from lmtune.data.templates import AlpacaTemplate
from lmtune.errors import UserError
from lmtune.evaluate import _plain_model_config, final_evaluation, forgetting, loss_data
from lmtune.evaluate.perplexity import LossResult, text_loss
from lmtune.evaluate.run import (EVAL_FILE, PREDICTIONS_FILE, EvalSettings, base_model, evaluate_model,
                                 inference_mode, merged_adapter, prompt_text, resolve_test_set)
from lmtune.generate import GenerationSettings, Generator
from lmtune.run.layout import OUTPUT_MARKER
from tiny_models import save_tiny_model

# Imported here, not only where used: torch-heavy modules are paid once, at collection.
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


# ---------------------------------------------------------------- model state

def test_inference_mode_sets_eval_and_cache_then_restores_both(tiny):
    model = tiny.model
    model.train()
    model.generation_config.use_cache = False
    with inference_mode(model) as m:
        assert m is model and not model.training and model.generation_config.use_cache is True
    assert model.training and model.generation_config.use_cache is False
    model.eval()
    with inference_mode(torch.nn.Linear(2, 2)) as lin:  # no generation_config: fine
        assert not lin.training


def _merged_flags(model):
    return {m.merged for m in model.modules() if isinstance(m, peft.tuners.lora.LoraLayer)}


def test_merged_adapter_merges_for_generation_only(tiny):
    before = {n: p.clone() for n, p in tiny.model.named_parameters()}
    with merged_adapter(tiny.model):
        assert _merged_flags(tiny.model) == {True}
    assert _merged_flags(tiny.model) == {False}
    assert all(torch.allclose(p, before[n], atol=1e-6) for n, p in tiny.model.named_parameters())
    tiny.model.is_loaded_in_4bit = True  # transformers' flag on a bitsandbytes 4-bit model
    try:
        with merged_adapter(tiny.model):
            assert _merged_flags(tiny.model) == {False}
    finally:
        del tiny.model.is_loaded_in_4bit
    with merged_adapter(torch.nn.Linear(2, 2)):  # no adapter: nothing to do
        pass


def test_base_model_is_the_adapter_switched_off_or_the_original_reloaded(tiny):
    ids = torch.tensor([[5, 6, 7, 8]])
    plain = AutoModelForCausalLM.from_pretrained(str(tiny.base)).eval()
    with torch.no_grad():
        want, tuned = plain(ids).logits, tiny.model(ids).logits
        assert (tuned - want).abs().max() > 1e-2
        with base_model(tiny.model, None, tiny.tok) as bm:
            assert torch.allclose(bm(ids).logits, want, atol=1e-5) and not bm.training
        assert torch.allclose(tiny.model(ids).logits, tuned)  # the adapter is back on
        full = AutoModelForCausalLM.from_pretrained(str(tiny.base))
        with torch.no_grad():
            full.model.embed_tokens.weight.add_(1.0)  # "trained": differs from the base on disk
        with base_model(full, _cfg(tiny), tiny.tok) as bm:
            assert bm is not full and not bm.training
            assert torch.allclose(bm(ids).logits, want, atol=1e-5)


# ---------------------------------------------------------------- which test set

def test_test_set_from_test_files_data_test_or_the_bundled_task(tiny, tmp_path):
    test = str(tiny.root / "test.jsonl")
    ts = resolve_test_set(_cfg(tiny), EvalSettings(test=[test]))
    assert ts.source == test and [e.response for e in ts.examples] == ["SELECT name 10", "SELECT name 11",
                                                                       "SELECT name 12"]
    assert ts.scorer.name == "generic" and ts.shots == []
    ts = resolve_test_set(_cfg(tiny, f"data.test={test}", "eval.num_samples=2", "eval.few_shot=1"), EvalSettings())
    assert len(ts.examples) == 2 and [s.response for s in ts.shots] == ["SELECT name 0"]
    ts = resolve_test_set(_cfg(tiny, f"data.test={test}", "eval.num_samples=2"), EvalSettings(num_samples=3, few_shot=2))
    assert len(ts.examples) == 3 and len(ts.shots) == 2
    ts = resolve_test_set(_cfg(tiny, f"data.test={test}", "eval.few_shot=2"), EvalSettings(few_shot=0))
    assert ts.shots == []
    sql = resolve_test_set(load_config(None, ["data.task=sql", "eval.num_samples=3"]), EvalSettings())
    assert sql.scorer.name == "sql" and len(sql.examples) == 3 and sql.source.endswith(".jsonl")
    assert resolve_test_set(_cfg(tiny), EvalSettings(), run_dir=tmp_path) is None
    (tmp_path / "t.jsonl").write_text('{"text": "plain text only"}\n')
    assert resolve_test_set(_cfg(tiny, "data.format=auto"), EvalSettings(test=[str(tmp_path / "t.jsonl")])) is None


def test_test_files_named_together_may_share_examples_with_the_shots(tiny, tmp_path):
    from lmtune.errors import DataError

    (tmp_path / "a.jsonl").write_text(json.dumps(_alpaca(0)) + "\n")  # also training example 0
    (tmp_path / "b.jsonl").write_text(json.dumps(_alpaca(20)) + "\n")
    files = [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    ts = resolve_test_set(_cfg(tiny, "eval.few_shot=1"), EvalSettings(test=files))
    assert ts.source == f"{files[0]}, {files[1]}" and [s.response for s in ts.shots] == ["SELECT name 0"]
    (tmp_path / "bad.jsonl").write_text('{"instruction": "", "output": "x"}\n')
    with pytest.raises(DataError, match="in the test data"):
        resolve_test_set(_cfg(tiny), EvalSettings(test=[str(tmp_path / "bad.jsonl")]))


def test_the_held_out_split_is_used_for_a_run_and_kept_out_of_the_shots(tiny, tmp_path):
    (tmp_path / HELDOUT_FILE).write_text("".join(json.dumps(_alpaca(i)) + "\n" for i in (0, 1)))
    ts = resolve_test_set(_cfg(tiny, "eval.few_shot=2"), EvalSettings(), run_dir=tmp_path)
    assert ts.source == f"{tmp_path / HELDOUT_FILE} (held out of data.train, never trained on)"
    assert [e.response for e in ts.examples] == ["SELECT name 0", "SELECT name 1"]
    assert [s.response for s in ts.shots] == ["SELECT name 2", "SELECT name 3"]
    assert resolve_test_set(_cfg(tiny), EvalSettings(subject="model"), run_dir=tmp_path) is None
    test = str(tiny.root / "test.jsonl")
    assert resolve_test_set(_cfg(tiny), EvalSettings(test=[test]), run_dir=tmp_path).source == test


def test_prompt_text_is_the_last_user_turn():
    chat = Example(source="t", format="chat", messages=[
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}])
    assert prompt_text(chat) == "c"
    assert prompt_text(Example(source="t", format="text", text="plain")) == "plain"
    assert prompt_text(Example(source="t", format="text")) == ""


# ---------------------------------------------------------------- evaluate_model

def test_evaluate_model_scores_tuned_and_base_on_the_same_prompts(tiny, tmp_path, monkeypatch):
    _probe(monkeypatch)
    test = str(tiny.root / "test.jsonl")
    cfg = _cfg(tiny, f"data.test={test}", "eval.forgetting_warn=1.2", "eval.forgetting_fail=9")
    validation = [{"input_ids": [5, 6, 7, 8, 9], "completion_mask": [0, 0, 1, 1, 1]}]
    result = evaluate_model(cfg, tmp_path, tiny.model, tiny.tok, tiny.template, validation,
                            EvalSettings(progress=False, samples_kept=2))
    examples = resolve_test_set(cfg, EvalSettings()).examples
    tuned_raw = _generate(tiny.model, tiny, examples)
    with tiny.model.disable_adapter():
        base_raw = _generate(tiny.model, tiny, examples)
        base_probe = text_loss(tiny.model, tiny.tok, PROBE, 512, 2)
    tuned_probe = text_loss(tiny.model, tiny.tok, PROBE, 512, 2)
    assert tuned_raw != base_raw
    assert result["run"] == str(tmp_path) and result["base_model"] == str(tiny.base)
    assert (result["subject"], result["method"]) == ("run", "lora")
    assert result["evaluated_at"].endswith("+00:00") and len(result["evaluated_at"]) == 25  # UTC, seconds
    assert isinstance(result["seconds"], float) and result["seconds"] == round(result["seconds"], 1)
    assert result["settings"] == {"max_new_tokens": 4, "num_samples": cfg.eval.num_samples, "greedy": True,
                                  "few_shot": 0}
    assert result["validation"]["source"] == "validation split"
    assert result["validation"]["tuned"]["tokens"] == 3 and result["validation"]["base"]["tokens"] == 3
    assert result["validation"]["tuned"]["loss"] != result["validation"]["base"]["loss"]
    task = result["task"]
    assert (task["name"], task["source"], task["examples"], task["primary"]) == ("generic", test, 3, "rouge_l")
    assert task["metrics"] == ["exact_match", "rouge_l"] and set(task["tuned"]) == set(task["base"]) == {
        "exact_match", "rouge_l"}
    f = result["forgetting"]
    assert f["base_perplexity"] == pytest.approx(base_probe.perplexity, rel=1e-5)
    assert f["tuned_perplexity"] == pytest.approx(tuned_probe.perplexity, rel=1e-5)
    assert (f["warn_at"], f["fail_at"], f["passages"], f["tokens"]) == (1.2, 9, 3, tuned_probe.tokens)
    assert tuned_probe.tokens < len(tiny.tok(PROBE)["input_ids"][2])   # the long passage was cut
    assert f["probe"] == "general/probe.jsonl"
    assert [s["index"] for s in result["samples"]] == [0, 1]
    assert result["samples"][0]["prompt"] == "List the customers of city 10"
    rows = [json.loads(line) for line in (tmp_path / PREDICTIONS_FILE).read_text().splitlines()]
    assert [r["tuned_raw"] for r in rows] == tuned_raw and [r["base_raw"] for r in rows] == base_raw
    assert [r["reference"] for r in rows] == ["SELECT name 10", "SELECT name 11", "SELECT name 12"]
    assert rows[0]["tuned"] == tuned_raw[0].strip() and rows[0]["base"] == base_raw[0].strip()
    assert set(rows[0]["tuned_scores"]) == set(rows[0]["base_scores"]) == {"exact_match", "rouge_l"}
    assert result["samples"] == [{k: v for k, v in r.items() if not k.endswith("_raw")} for r in rows[:2]]
    assert json.loads((tmp_path / EVAL_FILE).read_text()) == result
    assert not (tmp_path / OUTPUT_MARKER).exists() or list(tmp_path.iterdir())


def test_without_base_generation_the_probe_still_measures_the_base(tiny, tmp_path, monkeypatch):
    _probe(monkeypatch)
    test = tmp_path / "umlaut.jsonl"
    test.write_text(json.dumps({"instruction": "Welche Stadt?", "input": "", "output": "Köln"}, ensure_ascii=False)
                    + "\n", encoding="utf-8")
    cfg = _cfg(tiny, f"data.test={test}", "eval.num_samples=1")
    done = LossResult(1.0, 2.718, 10, 2)
    out = tmp_path / "new" / "out"  # --out under a directory that does not exist yet
    result = evaluate_model(cfg, out, tiny.model, tiny.tok, tiny.template, [{"input_ids": [1, 2, 3]}],
                            EvalSettings(base=False, progress=False, tuned_validation=done, few_shot=1))
    assert result["validation"]["tuned"] == done.to_dict() and result["validation"]["base"] is None
    assert result["task"]["base"] is None and result["task"]["examples"] == 1
    assert result["settings"]["few_shot"] == 1 and result["settings"]["num_samples"] == 1
    assert result["forgetting"]["verdict"] in ("ok", "warning", "forgotten")
    text = (out / PREDICTIONS_FILE).read_text(encoding="utf-8")
    assert '"reference": "Köln"' in text  # readable, not \u-escaped
    row = json.loads(text)
    assert "base" not in row and "base_raw" not in row and "base_scores" not in row
    assert json.loads((out / OUTPUT_MARKER).read_text())["kind"] == "eval"  # a new --out dir


def test_nothing_to_measure_writes_notes_and_removes_old_predictions(tiny, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(forgetting, "load_probe", lambda *a, **k: pytest.fail("the probe was read"))
    (tmp_path / "keep.txt").write_text("x")
    (tmp_path / PREDICTIONS_FILE).write_text("old\n")
    (tmp_path / EVAL_FILE).write_text("{}")
    result = evaluate_model(_cfg(tiny, "eval.forgetting_check=false"), tmp_path, tiny.model, tiny.tok, tiny.template,
                            None, EvalSettings(base=False, loss_source="none (no split)"))
    assert result["validation"] is None and result["validation_note"] == "no loss measured: none (no split)"
    assert result["task"] is None and result["task_note"] == (
        "no test prompts: pass --test FILE (alpaca, chat or prompt/completion records), or set data.test / "
        "data.task in the config")
    assert result["forgetting"] is None and result["samples"] == [] and result["settings"]["few_shot"] == 0
    assert not (tmp_path / PREDICTIONS_FILE).exists() and not (tmp_path / OUTPUT_MARKER).exists()
    assert json.loads((tmp_path / EVAL_FILE).read_text()) == result
    assert capsys.readouterr().out == ""  # nothing generated, nothing logged
    assert evaluate_model(_cfg(tiny, "eval.forgetting_check=false"), None, tiny.model, tiny.tok, tiny.template,
                          None, EvalSettings(base=False, progress=False))["run"] is None


def test_progress_lines_name_the_side_and_the_shots(tiny, tmp_path, monkeypatch, capsys):
    _probe(monkeypatch)
    cfg = _cfg(tiny, f"data.test={tiny.root / 'test.jsonl'}", "eval.num_samples=1", "eval.forgetting_check=false")
    evaluate_model(cfg, tmp_path, tiny.model, tiny.tok, tiny.template, None, EvalSettings(few_shot=2))
    out = capsys.readouterr().out
    assert "[eval] generating 1 answers (tuned with 2 shots)\n" in out
    assert "[eval] generating 1 answers (base with 2 shots)\n" in out
    evaluate_model(cfg, tmp_path, tiny.model, tiny.tok, tiny.template, None,
                   EvalSettings(base=False, subject="model"))
    assert "[eval] generating 1 answers (model)\n" in capsys.readouterr().out


# ---------------------------------------------------------------- evaluate/__init__.py

def test_final_evaluation_names_where_the_loss_came_from(tiny, tmp_path, monkeypatch):
    _probe(monkeypatch)
    cfg = _cfg(tiny, "eval.forgetting_check=false")
    r = final_evaluation(cfg, tmp_path, tiny.model, tiny.tok, tiny.template, [{"input_ids": [1, 2, 3, 4]}],
                         progress=False)
    assert r["validation"]["source"] == "validation split" and r["validation"]["base"]["tokens"] == 3
    r = final_evaluation(cfg, tmp_path, tiny.model, tiny.tok, tiny.template, progress=False,
                         validation_loss=LossResult(1.0, 2.7, 5, 1))
    assert r["validation"]["tuned"]["tokens"] == 5 and r["validation"]["source"].startswith("none (the run has")
    r = final_evaluation(cfg, tmp_path, tiny.model, tiny.tok, tiny.template, progress=False)
    assert r["validation_note"] == "no loss measured: none (the run has no validation data)"


def test_a_plain_model_needs_a_task_or_test_files_and_never_an_adapter():
    with pytest.raises(UserError) as info:
        _plain_model_config("m", "adapter", "sql", None)
    assert info.value.render() == ("error: m: a bare adapter; `lmtune eval` takes a run directory or a model\n"
                                   "  evaluate the run that wrote it, or merge it first (`lmtune merge`)")
    with pytest.raises(UserError) as info:
        _plain_model_config("m", "model", None, None)
    assert info.value.render() == (
        "error: m: not a run directory, so there is nothing to compare it with\n  to score a model on its own, "
        "name a bundled task or test files: `lmtune eval m --task sql` or `lmtune eval m --test FILE`")
    cfg = _plain_model_config("m", "model", "sql", None)
    assert (cfg.model.name_or_path, cfg.data.task) == ("m", "sql")
    with pytest.raises(UserError) as info:
        _plain_model_config("m", "model", "nope", None)
    assert info.value.render().startswith("error: --task: 1 problem in the configuration\n  data.task")
    cfg = _plain_model_config("m", "model", None, ["t.jsonl"])
    assert cfg.data.task is None and cfg.data.train == []  # the test file is never training data


def test_a_plain_model_is_scored_on_test_files_alone(tiny, tmp_path, monkeypatch):
    """`lmtune eval MODEL --test FILE` without --task: it used to stop at a config error
    ("data.train: no training data"); --few-shot then has no training data to take shots from."""
    from lmtune.cli import main

    monkeypatch.chdir(tmp_path)
    test = str(tiny.root / "test.jsonl")
    assert main(["eval", str(tiny.base), "--test", test, "--out", "ev", "--max-new-tokens", "2"]) == 0
    result = json.loads((tmp_path / "ev" / EVAL_FILE).read_text())
    assert result["subject"] == "model" and result["task"]["examples"] == 3 and result["forgetting"] is None
    assert result["method"] is None  # a plain model was not trained by any method
    assert result["validation"]["source"] == f"test: {test}"
    assert main(["eval", str(tiny.base), "--test", test, "--few-shot", "1", "--out", "ev2"]) == 2


def test_loss_data_from_test_files_the_validation_split_or_a_reason(tiny, tmp_path):
    test = str(tiny.root / "test.jsonl")
    rows, what = loss_data(_cfg(tiny), tiny.tok, tiny.template, EvalSettings(test=[test]))
    assert what == f"test: {test}" and len(rows) == 3
    assert set(rows[0]) == {"input_ids", "completion_mask"} and 0 < sum(rows[0]["completion_mask"]) < len(
        rows[0]["input_ids"])
    assert loss_data(_cfg(tiny, "data.val_split=0"), tiny.tok, tiny.template, EvalSettings()) == (
        None, "none (data.val_split is 0 and no data.validation)")
    val, what = loss_data(_cfg(tiny, f"data.validation={test}"), tiny.tok, tiny.template, EvalSettings())
    assert what == "validation split" and len(val) == 3
    cfg = _cfg(tiny, f"data.validation={test}")
    cfg.data.train = [str(tmp_path / "moved.jsonl")]
    rows, what = loss_data(cfg, tiny.tok, tiny.template, EvalSettings())
    assert rows is None and what.startswith("unavailable (")


# ---------------------------------------------------------------- evaluate_run on a run directory
def test_evaluate_run_passes_every_option_through(tiny, tmp_path, monkeypatch, capsys):
    from lmtune.evaluate import evaluate_run, run as run_module

    _probe(monkeypatch)
    test = str(tiny.root / "test.jsonl")
    run = _run_dir(tiny, tmp_path, f"data.validation={test}", "eval.forgetting_check=false", "eval.num_samples=3")
    calls = []
    for name in ("dataset_loss", "text_loss"):
        _spy(monkeypatch, run_module, name, calls)
    _spy(monkeypatch, Generator, "generate", calls)
    r = evaluate_run(run, test=(test,), num_samples=2, max_new_tokens=3, batch_size=1, forgetting=True,
                     progress=False, few_shot=1)
    assert capsys.readouterr().out == ""
    assert (r["run"], r["subject"], r["method"]) == (str(run), "run", "lora")
    assert json.loads((run / EVAL_FILE).read_text()) == r
    assert r["settings"] == {"max_new_tokens": 3, "num_samples": 2, "greedy": True, "few_shot": 1}
    assert r["validation"]["source"] == f"test: {test}" and r["validation"]["tuned"]["examples"] == 3
    assert r["validation"]["base"] is None and r["task"]["base"] is None   # base generation is off by default
    assert r["task"]["source"] == test and r["task"]["examples"] == 2 and r["forgetting"] is not None
    gen = [c for c in calls if c[0] == "generate"]
    assert len(gen) == 1 and gen[0][1][2].batch_size == 1 and gen[0][1][2].max_new_tokens == 3
    losses = [c for c in calls if c[0] in ("dataset_loss", "text_loss")]
    assert [(c[1][4], c[2]["desc"]) for c in losses] == [(1, None)] * 3   # tuned validation, probe x2
    # the defaults: the run's validation split, no probe (the config's eval.forgetting_check), progress bars
    calls.clear()
    r = evaluate_run(run, base=True)
    assert r["validation"]["source"] == "validation split" and r["validation"]["base"]["examples"] == 3
    assert r["task"] is None and r["forgetting"] is None and r["settings"]["num_samples"] == 3
    assert [(c[0], c[1][4], c[2]["desc"]) for c in calls] == [("dataset_loss", 2, "validation loss (tuned)"),
                                                              ("dataset_loss", 2, "validation loss (base)")]
    calls.clear()
    evaluate_run(run, forgetting=True)
    assert [(c[0], c[2]["desc"]) for c in calls] == [
        ("dataset_loss", "validation loss (tuned)"), ("text_loss", "probe perplexity (tuned)"),
        ("text_loss", "probe perplexity (base)")]
    with pytest.raises(UserError) as err:
        evaluate_run(run, task="sql")
    assert err.value.render() == (f"error: --task sql: {run} was trained on data.task=None\n"
                                  "  score a run on other prompts with --test FILE")


def test_evaluate_run_on_a_plain_model_never_compares(tiny, tmp_path, monkeypatch):
    from lmtune.evaluate import evaluate_run

    monkeypatch.setattr(forgetting, "load_probe", lambda *a, **k: pytest.fail("the probe was read"))
    test = str(tiny.root / "test.jsonl")
    r = evaluate_run(str(tiny.base), test=[test], base=True, forgetting=True, progress=False, num_samples=1)
    assert (r["run"], r["subject"], r["method"]) == (None, "model", None)   # no --out: nothing written
    assert r["base_model"] == str(tiny.base)
    # a bundled task names the scorer; --test gives the prompts
    r = evaluate_run(str(tiny.base), test=[test], task="sql", progress=False, num_samples=1, max_new_tokens=1)
    assert r["task"]["name"] == "sql" and r["task"]["source"] == test
    assert r["task"]["base"] is None and r["forgetting"] is None and r["validation"]["base"] is None


def test_validation_loss_for_train_summary_is_evals_number(tiny, monkeypatch):
    from lmtune.evaluate import run as run_module
    from lmtune.evaluate.perplexity import dataset_loss
    from lmtune.evaluate.run import validation_loss

    cfg = _cfg(tiny, "data.max_length=64")
    validation = [{"input_ids": [5, 6, 7, 8, 9], "completion_mask": [0, 0, 1, 1, 1]},
                  {"input_ids": [4, 3, 2], "completion_mask": [0, 1, 1]}]
    seen = []
    monkeypatch.setattr(run_module, "dataset_loss",
                        lambda m, *a, **k: seen.append((m.training, a, k)) or dataset_loss(m, *a, **k))
    tiny.model.train()
    try:
        got = validation_loss(tiny.model, validation, tiny.tok, cfg)
        assert tiny.model.training   # back to training mode afterwards
        assert validation_loss(tiny.model, validation, tiny.tok, cfg, progress=True) == got
    finally:
        tiny.model.eval()
    assert seen == [(False, (validation, tiny.tok.pad_token_id, 64, 2), {"desc": None}),
                    (False, (validation, tiny.tok.pad_token_id, 64, 2), {"desc": "validation loss (tuned)"})]
    assert got == dataset_loss(tiny.model, validation, tiny.tok.pad_token_id, 64, 2) and got.tokens == 5


def test_final_evaluation_shows_progress_by_default(tiny, tmp_path, capsys):
    cfg = _cfg(tiny, f"data.test={tiny.root / 'test.jsonl'}", "eval.num_samples=1", "eval.forgetting_check=false")
    r = final_evaluation(cfg, tmp_path, tiny.model, tiny.tok, tiny.template)
    out = capsys.readouterr().out
    assert "[eval] generating 1 answers (tuned)\n" in out and "[eval] generating 1 answers (base)\n" in out
    assert r["task"]["base"] is not None   # the end of train always compares with the base
    assert r["run"] == str(tmp_path) and json.loads((tmp_path / EVAL_FILE).read_text()) == r
    final_evaluation(cfg, tmp_path, tiny.model, tiny.tok, tiny.template, progress=False)
    assert capsys.readouterr().out == ""


def test_the_probe_window_is_the_models_own_when_shorter(tiny):
    from lmtune.evaluate.run import _probe_loss
    from transformers import LlamaConfig

    torch.manual_seed(0)
    short = AutoModelForCausalLM.from_config(LlamaConfig(
        vocab_size=tiny.model.config.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)).eval()
    got = _probe_loss(short, tiny.tok, _cfg(tiny), EvalSettings(progress=False), [PROBE[2]], "tuned")
    assert (got.examples, got.tokens) == (1, 63)   # 64 positions, the first token is not predicted


def test_evaluate_run_refuses_a_bare_adapter_and_checks_the_task(tiny, tmp_path):
    from lmtune.evaluate import evaluate_run

    tiny.model.save_pretrained(str(tmp_path / "adapter"))
    with pytest.raises(UserError, match="a bare adapter"):
        evaluate_run(str(tmp_path / "adapter"), task="sql")
    test = str(tiny.root / "test.jsonl")
    run = _run_dir(tiny, tmp_path, "data.task=sql", "eval.forgetting_check=false")
    r = evaluate_run(run, test=[test], task="sql", num_samples=1, max_new_tokens=1, progress=False)
    assert r["task"]["name"] == "sql" and r["task"]["examples"] == 1   # the run's own task: scored on --test
    assert evaluate_run(run, test=[test], num_samples=1, max_new_tokens=1, progress=False)["task"]["name"] == "sql"


def test_loss_data_reads_test_files_with_the_runs_data_settings(tiny, tmp_path):
    from lmtune.errors import DataError

    test = str(tiny.root / "test.jsonl")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(DataError) as err:
        loss_data(_cfg(tiny), tiny.tok, tiny.template, EvalSettings(test=[str(tmp_path / "empty.jsonl")]))
    assert err.value.args[0].startswith("1 problem in the test data")
    rows, what = loss_data(_cfg(tiny, "data.train_on_prompt=true"), tiny.tok, tiny.template,
                           EvalSettings(test=[test, test]))
    assert what == f"test: {test}, {test}" and len(rows) == 6
    assert all(sum(r["completion_mask"]) == len(r["input_ids"]) for r in rows)   # the prompt is trained on too
    longest = max(len(r["input_ids"]) for r in rows)
    kept, _ = loss_data(_cfg(tiny, f"data.max_length={longest}"), tiny.tok, tiny.template, EvalSettings(test=[test]))
    short, _ = loss_data(_cfg(tiny, f"data.max_length={longest - 1}"), tiny.tok, tiny.template,
                         EvalSettings(test=[test]))
    assert max(len(r["input_ids"]) for r in kept) == longest
    assert short and max(len(r["input_ids"]) for r in short) < longest   # data.max_length applies as in training


def test_what_evaluate_model_hands_the_generator(tiny, monkeypatch):
    from lmtune.evaluate import run as run_module
    from lmtune.evaluate.few_shot import few_shot_prompts

    calls, merged = [], []
    _spy(monkeypatch, Generator, "generate", calls)
    real = run_module.merged_adapter
    monkeypatch.setattr(run_module, "merged_adapter", lambda m: merged.append(m) or real(m))
    cfg = _cfg(tiny, f"data.test={tiny.root / 'test.jsonl'}", "eval.num_samples=1", "eval.forgetting_check=false",
               "eval.few_shot=1")
    r = evaluate_model(cfg, None, tiny.model, tiny.tok, tiny.template, None, EvalSettings(progress=False))
    ts = resolve_test_set(cfg, EvalSettings())
    want = few_shot_prompts(tiny.template, ts.shots, ts.examples)
    assert len(want) == 1 and want[0] != ts.examples[0]   # the shot is in front
    assert len(calls) == 2   # tuned, then base (EvalSettings() compares with the base)
    for _, (_, items, gs), kwargs in calls:
        assert items == want and kwargs == {"progress": False}
        assert (gs.max_new_tokens, gs.greedy, gs.batch_size) == (4, True, 2)   # eval.max_new_tokens, eval batch
    assert merged == [tiny.model]   # merged for the tuned side only
    assert 0 <= r["seconds"] < 600
    # no settings at all: EvalSettings()'s defaults (a run, compared with its base)
    bare = evaluate_model(_cfg(tiny, "eval.forgetting_check=false"), None, tiny.model, tiny.tok, tiny.template)
    assert (bare["subject"], bare["method"], bare["task"]) == ("run", "lora", None)


def test_a_full_fine_tune_is_compared_with_the_base_reloaded(tiny, monkeypatch):
    _probe(monkeypatch)
    full = AutoModelForCausalLM.from_pretrained(str(tiny.base)).eval()
    with torch.no_grad():
        full.model.embed_tokens.weight.add_(0.5)   # "trained"
    r = evaluate_model(_cfg(tiny, "method=full"), None, full, tiny.tok, tiny.template, None,
                       EvalSettings(base=False, progress=False))
    plain = AutoModelForCausalLM.from_pretrained(str(tiny.base)).eval()
    f = r["forgetting"]
    assert f["base_perplexity"] == pytest.approx(text_loss(plain, tiny.tok, PROBE, 512, 2).perplexity, rel=1e-5)
    assert f["tuned_perplexity"] == pytest.approx(text_loss(full, tiny.tok, PROBE, 512, 2).perplexity, rel=1e-5)
    assert r["method"] == "full" and f["base_perplexity"] != f["tuned_perplexity"]


def test_evaluate_model_finds_the_held_out_split_in_the_run(tiny, tmp_path):
    (tmp_path / HELDOUT_FILE).write_text(json.dumps(_alpaca(7)) + "\n")
    r = evaluate_model(_cfg(tiny, "eval.forgetting_check=false"), tmp_path, tiny.model, tiny.tok, tiny.template,
                       None, EvalSettings(base=False, progress=False))
    assert r["task"]["source"].startswith(str(tmp_path / HELDOUT_FILE)) and r["task"]["examples"] == 1


def test_loss_data_tokenizes_the_validation_split_with_the_runs_template(tiny):
    from lmtune.data.templates import ChatMLTemplate

    cfg = _cfg(tiny, f"data.validation={tiny.root / 'test.jsonl'}")   # data.template=alpaca
    alpaca, _ = loss_data(cfg, tiny.tok, tiny.template, EvalSettings())
    chatml, _ = loss_data(cfg, tiny.tok, ChatMLTemplate(), EvalSettings())   # as template.json would say
    assert len(alpaca) == len(chatml) == 3 and alpaca[0]["input_ids"] != chatml[0]["input_ids"]


def test_the_base_of_a_lora_run_is_never_reloaded_and_a_known_loss_never_remeasured(tiny, tmp_path, monkeypatch):
    import lmtune.models
    from lmtune.evaluate import run as run_module

    monkeypatch.setattr(lmtune.models, "load_model", lambda *a, **k: pytest.fail("the base was loaded again"))
    calls = []
    _spy(monkeypatch, run_module, "dataset_loss", calls)
    r = final_evaluation(_cfg(tiny, "eval.forgetting_check=false"), tmp_path, tiny.model, tiny.tok, tiny.template,
                         [{"input_ids": [1, 2, 3, 4]}], progress=False, validation_loss=LossResult(1.0, 2.7, 5, 1))
    assert r["validation"]["tuned"]["tokens"] == 5 and r["validation"]["base"]["tokens"] == 3
    assert [c[2]["desc"] for c in calls] == [None]   # the base's loss only: the tuned one was given


def test_a_full_fine_tunes_base_gets_the_runs_added_tokens(tiny, monkeypatch):
    tok = AutoTokenizer.from_pretrained(str(tiny.base))
    tok.add_tokens(["<extra_token>"])   # as a run that added a token (and resized its embeddings) has
    monkeypatch.setattr(forgetting, "load_probe", lambda *a, **k: ["a <extra_token> b", "<extra_token> c"])
    full = AutoModelForCausalLM.from_pretrained(str(tiny.base)).eval()
    full.resize_token_embeddings(len(tok))
    r = evaluate_model(_cfg(tiny, "method=full"), None, full, tok, tiny.template, None,
                       EvalSettings(base=False, progress=False))
    assert r["forgetting"]["tokens"] > 0 and r["forgetting"]["base_perplexity"] > 0
