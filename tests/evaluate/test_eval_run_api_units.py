"""lmtune/evaluate/__init__.py and run.py seen from their callers: evaluate_run on a run directory
(config.yaml + adapter, made here without training) and on a plain model, final_evaluation and
validation_loss as train calls them, loss_data, and what evaluate_model hands the generator and the
loss functions (spied on, the real ones still run). Part of the mutation run of evaluate/run."""

from __future__ import annotations

import json

import pytest
import torch

from eval_run_helpers import PROBE, _alpaca, _cfg, _probe, _run_dir, _spy, tiny  # noqa: F401  (tiny: the fixture)
from lmtune.data.holdout import HELDOUT_FILE
from lmtune.errors import UserError
from lmtune.evaluate import final_evaluation, forgetting, loss_data
from lmtune.evaluate.perplexity import LossResult, text_loss
from lmtune.evaluate.run import EVAL_FILE, EvalSettings, evaluate_model, resolve_test_set
from lmtune.generate import Generator
from transformers import AutoModelForCausalLM, AutoTokenizer

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
