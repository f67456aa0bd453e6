"""lmtune/evaluate's pieces without a training run: loss and perplexity against cross-entropy by
hand on a tiny model, the terminal summary line by line, task scoring, and few-shot shots taken
from the training files. The mutation run of lmtune/evaluate uses these (scripts/mutation.sh)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lmtune.config import load_config
from lmtune.data.formats import Example
from lmtune.data.templates import AlpacaTemplate, ChatMLTemplate, ModelTemplate
from lmtune.errors import UserError
from lmtune.evaluate.few_shot import few_shot_prompts, load_shots
from lmtune.evaluate.metrics import PRIMARY, Scores, get_scorer, primary_metric, score
from lmtune.evaluate.perplexity import (IGNORE, LossResult, _collate, _ppl, dataset_loss, labels_from_masks,
                                        sequence_loss, text_loss)
from lmtune.evaluate.summary import summarize
from tiny_models import InputsSeen, build_tokenizer, meta_model, save_tiny_model

# Imported here, not only where used: a mutation run forks every mutant's tests from one process
# that collected this module, so these imports are paid once.
import transformers.models.llama.modeling_llama  # noqa: E402,F401
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = save_tiny_model(tmp_path_factory.mktemp("eval-units") / "base", "llama")
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(str(path)).eval(), AutoTokenizer.from_pretrained(str(path))


def _by_hand(model, rows):
    """(sum NLL, predicted tokens) of (input_ids, labels) rows, one row at a time, no padding."""
    nll, n = 0.0, 0
    for ids, labels in rows:
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1]
        target = torch.tensor(labels[1:])
        keep = target != IGNORE
        nll += float(torch.nn.functional.cross_entropy(logits[keep], target[keep], reduction="sum"))
        n += int(keep.sum())
    return nll, n


# ---------------------------------------------------------------- perplexity.py

def test_labels_from_masks_every_source():
    assert labels_from_masks({"input_ids": [1, 2], "labels": (7, 8)}) == [7, 8]
    ids = [5, 6, 7, 8]
    assert labels_from_masks({"input_ids": ids}) == ids
    assert labels_from_masks({"input_ids": ids, "assistant_masks": [1, 0, 1, 0]}) == [5, IGNORE, 7, IGNORE]
    both = {"input_ids": ids, "completion_mask": [0, 1, 1, 1], "assistant_masks": [1, 1, 1, 0]}
    assert labels_from_masks(both) == [IGNORE, 6, 7, IGNORE]  # either mask at 0 hides the token
    assert ids == [5, 6, 7, 8]


def test_collate_right_pads_ids_labels_and_mask():
    ids, labels, mask = _collate([([1, 2, 3], [IGNORE, 2, 3]), ([4], [4])], pad_id=9)
    assert ids.tolist() == [[1, 2, 3], [4, 9, 9]]
    assert labels.tolist() == [[IGNORE, 2, 3], [4, IGNORE, IGNORE]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0]] and mask.dtype == torch.long


def test_sequence_loss_equals_cross_entropy_by_hand_whatever_the_batching(tiny):
    model, tok = tiny
    rows = [([3, 40, 41, 42, 43, 44, 45], [IGNORE, IGNORE, 41, 42, 43, 44, 45]),
            ([50, 51, 52], [50, 51, 52]),
            ([60, 61, 62, 63, 64], [IGNORE, IGNORE, IGNORE, IGNORE, 64]),
            ([70, 71], [70, IGNORE]),                 # nothing predicted after the first token: dropped
            ([80, 81, 82, 83], [IGNORE, 81, IGNORE, 83]),
            ([90, 91, 92], [IGNORE, 91, IGNORE])]     # only the second token is predicted: kept
    nll, n = _by_hand(model, [r for i, r in enumerate(rows) if i != 3])
    for batch in (1, 2, 8):
        res = sequence_loss(model, rows, tok.pad_token_id, batch_size=batch)
        assert (res.tokens, res.examples) == (n, 5) and n == 5 + 2 + 1 + 2 + 1
        assert res.loss == pytest.approx(nll / n, rel=1e-5)
        assert res.perplexity == pytest.approx(math.exp(nll / n), rel=1e-5)
    assert sequence_loss(model, rows, tok.pad_token_id, 2, desc="loss").loss == pytest.approx(nll / n, rel=1e-5)


def test_sequence_loss_restores_the_training_flag_and_handles_nothing_to_predict(tiny):
    model, tok = tiny
    model.train()
    try:
        sequence_loss(model, [([1, 2, 3], [1, 2, 3])], tok.pad_token_id)
        assert model.training
    finally:
        model.eval()
    sequence_loss(model, [([1, 2, 3], [1, 2, 3])], tok.pad_token_id)
    assert not model.training
    empty = sequence_loss(model, [([1, 2], [1, IGNORE])], tok.pad_token_id)
    assert empty.tokens == 0 and empty.examples == 0
    assert math.isnan(empty.loss) and math.isnan(empty.perplexity)


def test_perplexity_is_exp_loss_capped_at_e50():
    assert _ppl(0.0) == 1.0 and _ppl(2.0) == pytest.approx(math.exp(2.0))
    assert _ppl(50.0) == math.exp(50.0) and _ppl(80.0) == math.exp(50.0)
    assert math.isnan(_ppl(float("nan")))
    assert LossResult(1.0, 2.0, 3, 4).to_dict() == {"loss": 1.0, "perplexity": 2.0, "tokens": 3, "examples": 4}


def test_dataset_loss_truncates_like_training_and_stops_at_the_limit(tiny):
    model, tok = tiny
    data = [{"input_ids": [10, 11, 12, 13, 14, 15], "completion_mask": [0, 1, 1, 1, 1, 1]},
            {"input_ids": [20, 21, 22], "labels": [IGNORE, 21, 22]},
            {"input_ids": [30, 31, 32, 33], "completion_mask": [0, 0, 1, 1]}]
    res = dataset_loss(model, data, tok.pad_token_id, max_length=4, batch_size=2)
    rows = [([10, 11, 12, 13], [IGNORE, 11, 12, 13]), ([20, 21, 22], [IGNORE, 21, 22]),
            ([30, 31, 32, 33], [IGNORE, IGNORE, 32, 33])]
    nll, n = _by_hand(model, rows)
    assert (res.tokens, res.examples) == (n, 3) and res.loss == pytest.approx(nll / n, rel=1e-5)
    two = dataset_loss(model, data, tok.pad_token_id, max_length=4, limit=2)
    assert (two.tokens, two.examples) == (5, 2)
    assert dataset_loss(model, data, tok.pad_token_id, max_length=4, limit=0).examples == 0


def test_text_loss_predicts_every_token_after_the_first_truncated(tiny):
    model, tok = tiny
    tok.padding_side = "left"  # what generation leaves; loss pads right itself
    texts = ["SELECT name FROM customers WHERE city = 'Berlin'", "The quick brown fox", "How many orders?"]
    res = text_loss(model, tok, texts, max_length=6, batch_size=2)
    rows = [(ids[:6], ids[:6]) for ids in tok(texts)["input_ids"]]
    nll, n = _by_hand(model, rows)
    assert (res.tokens, res.examples) == (n, 3) and n == sum(len(r[0]) - 1 for r in rows)
    assert res.loss == pytest.approx(nll / n, rel=1e-5)
    assert text_loss(model, tok, texts, 6, 2, desc="probe").loss == pytest.approx(res.loss, rel=1e-6)


def test_progress_bars_are_named(tiny, capsys):
    model, tok = tiny
    capsys.readouterr()
    text_loss(model, tok, ["The quick brown fox"], 16, desc="probe perplexity (tuned)")
    dataset_loss(model, [{"input_ids": [1, 2, 3]}], tok.pad_token_id, 8, desc="validation loss (base)")
    err = capsys.readouterr().err
    assert "probe perplexity (tuned)" in err and "validation loss (base)" in err
    assert err.count("?batch/s]") == 2  # counted in batches
    assert "\n" not in err and err.endswith("\r")  # each bar is wiped when its loss is done


def test_sequence_loss_sends_ids_mask_and_labels_to_the_models_device(tiny):
    model, _ = tiny
    with pytest.raises(InputsSeen) as seen:
        sequence_loss(meta_model(model.config), [([1, 2, 3], [1, 2, 3])], 0)
    meta = torch.device("meta")
    assert seen.value.args[0] == {"input_ids": meta, "attention_mask": meta, "labels": meta}


def test_text_loss_predicts_the_token_after_a_bos_too():
    """A tokenizer that adds <s> (Llama style): the first text token is predicted from it."""
    from tiny_models import model_config
    from tiny_tokenizers import llama_style

    tok = llama_style()
    tok.pad_token = tok.eos_token
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(model_config("llama", len(tok))).eval()
    texts = ["Hello, how are you?", "SELECT name FROM customers"]
    ids = tok(texts)["input_ids"]
    assert all(i[0] == tok.bos_token_id for i in ids)
    res = text_loss(model, tok, texts, max_length=64)
    nll, n = _by_hand(model, [(i, i) for i in ids])
    assert res.tokens == n == sum(len(i) - 1 for i in ids) and res.loss == pytest.approx(nll / n, rel=1e-5)


# ---------------------------------------------------------------- summary.py

def _result(**over):
    result = {
        "validation": {"source": "validation split",
                       "tuned": {"loss": 1.23456, "perplexity": 3.4367, "examples": 12},
                       "base": {"loss": 2.5, "perplexity": 12.18249}},
        "task": {"name": "sql", "examples": 20, "source": "sql/test.jsonl", "primary": "execution_accuracy",
                 "metrics": ["execution_accuracy", "valid_sql"],
                 "tuned": {"execution_accuracy": 0.55, "valid_sql": 0.9},
                 "base": {"execution_accuracy": 0.05, "valid_sql": None}},
        "forgetting": {"verdict": "ok", "base_perplexity": 40.04, "tuned_perplexity": 44.96, "ratio": 1.1229,
                       "warn_at": 1.5, "fail_at": 3.0},
        "settings": {"few_shot": 0},
    }
    result.update(over)
    return result


def test_summary_of_a_run_with_every_part():
    assert summarize(_result()).split("\n") == [
        "eval loss 1.2346, perplexity 3.44 on 12 examples [validation split]   (base: loss 2.5000, perplexity 12.18)",
        "task sql: 20 test examples from sql/test.jsonl",
        "  metric                 base    tuned",
        "  execution_accuracy     5.0%    55.0% *",
        "  valid_sql                 -    90.0%",
        "forgetting: ok: general-text perplexity 40.0 -> 45.0 (x1.12; warn > x1.5, forgotten > x3)"]


def test_summary_without_base_loss_with_shots_and_for_a_plain_model():
    r = _result(subject="model", settings={"few_shot": 3}, forgetting=None)
    r["validation"] = {"tuned": {"loss": 1.0, "perplexity": 2.718, "examples": 2}}
    r["task"]["metrics"] = ["execution_accuracy"]
    assert summarize(r).split("\n") == [
        "eval loss 1.0000, perplexity 2.72 on 2 examples []",
        "task sql: 20 test examples from sql/test.jsonl, 3-shot prompts",
        "  metric                model",
        "  execution_accuracy    55.0% *"]
    r = _result(validation=None, settings={"few_shot": 2}, forgetting=None)
    assert summarize(r).split("\n")[0] == "task sql: 20 test examples from sql/test.jsonl, 2-shot prompts"
    r = _result(settings=None, forgetting=None, validation=None)
    r["task"]["base"] = None
    assert summarize(r).split("\n")[1:] == [
        "  metric                 base    tuned", "  execution_accuracy        -    55.0% *", "  valid_sql                 -    90.0%"]


def test_summary_notes_when_nothing_was_measured():
    r = {"validation": None, "validation_note": "no loss measured: none", "task": None, "task_note": "no test prompts"}
    assert summarize(r) == "no loss measured: none\nno test prompts"
    assert summarize({}) == ""


# ---------------------------------------------------------------- metrics.py

def test_scorer_and_primary_metric_per_task():
    assert get_scorer(None).name == "generic" and get_scorer("sql").name == "sql"
    assert PRIMARY == {"sql": "execution_accuracy", "json": "field_accuracy", "generic": "rouge_l"}
    assert [primary_metric(get_scorer(t)) for t in ("sql", "json", None)] == [
        "execution_accuracy", "field_accuracy", "rouge_l"]

    class Own:
        name, metrics, primary_metric = "own", ("a", "b"), "b"

    assert primary_metric(Own()) == "b"
    Own.primary_metric = None
    assert primary_metric(Own()) == "a"
    Own.name = "sql"
    assert primary_metric(Own()) == "execution_accuracy"


def test_score_extracts_answers_then_averages_each_metric():
    task = get_scorer("generic")
    answers, scores = score(task, ["  Berlin \n", "Paris"], ["Berlin", {"output": "Rome"}])
    assert answers == ["Berlin", "Paris"]
    assert scores.primary == "rouge_l" and list(scores.values) == list(task.metrics)
    assert scores.values["exact_match"] == 0.5 and scores.values["rouge_l"] == 0.5
    assert [r["exact_match"] for r in scores.per_example] == [1.0, 0.0]
    assert scores.to_dict() == {"primary": "rouge_l", **scores.values}
    assert Scores("x").to_dict() == {"primary": "x"} and Scores("x").per_example == []


# ---------------------------------------------------------------- few_shot.py

def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _alpaca(i):
    return {"instruction": f"question {i}", "input": "", "output": f"answer {i}"}


def test_load_shots_takes_the_first_k_skipping_the_held_out_ones(tmp_path):
    train = _write(tmp_path / "train.jsonl", [_alpaca(i) for i in range(5)])
    cfg = load_config(None, [f"data.train={train}", "data.format=alpaca"])
    assert load_shots(cfg, 0) == [] and load_shots(cfg, -1) == []
    assert [s.response for s in load_shots(cfg, 2)] == ["answer 0", "answer 1"]
    held = {ex.content_key() for ex in load_shots(cfg, 2)}
    assert [s.response for s in load_shots(cfg, 3, held)] == ["answer 2", "answer 3", "answer 4"]
    assert [s.response for s in load_shots(cfg, 5)][-1] == "answer 4"
    with pytest.raises(UserError) as info:
        load_shots(cfg, 4, held)
    assert info.value.render() == "error: --few-shot 4: the training data has only 3 usable examples"


def test_bad_training_records_are_reported_as_few_shot_examples(tmp_path):
    from lmtune.errors import DataError

    train = _write(tmp_path / "train.jsonl", [_alpaca(0), {"instruction": "", "input": "", "output": "x"}])
    cfg = load_config(None, [f"data.train={train}", "data.format=alpaca"])
    with pytest.raises(DataError) as info:
        load_shots(cfg, 1)
    assert "in the few-shot examples" in info.value.args[0]


def test_load_shots_from_a_bundled_task_and_never_from_plain_text(tmp_path):
    cfg = load_config(None, ["data.task=sql"])
    assert len(load_shots(cfg, 2)) == 2
    text = _write(tmp_path / "t.jsonl", [{"text": "plain text, no answer"}] * 3)
    cfg = load_config(None, [f"data.train={text}"])
    with pytest.raises(UserError, match="--few-shot 1: the training data has only 0 usable examples"):
        load_shots(cfg, 1)
    cfg.data.train = []  # a config without training data (load_config itself refuses one)
    assert load_shots(cfg, 0) == []  # zero shots reads nothing
    with pytest.raises(UserError) as info:
        load_shots(cfg, 2)
    assert info.value.render() == ("error: --few-shot 2: no training examples to take shots from\n"
                                   "  set data.task (a bundled task) or data.train in the config")


def _ex(q, a, system=None):
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return Example(source="t", format="chat", messages=msgs)


def test_a_chat_shot_loses_its_system_turn_and_the_test_keeps_its_own():
    shots = [_ex("q1", "a1", system="shot system"), _ex("q2", "a2")]
    [prompt] = few_shot_prompts(ChatMLTemplate(), shots, [_ex("q3", "a3", system="test system")])
    assert prompt == ("<|im_start|>system\ntest system<|im_end|>\n"
                      "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
                      "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\na2<|im_end|>\n"
                      "<|im_start|>user\nq3<|im_end|>\n<|im_start|>assistant\n")
    [no_system] = few_shot_prompts(ChatMLTemplate(), shots, [_ex("q3", "a3")])
    assert no_system.startswith("<|im_start|>user\nq1<|im_end|>")
    later = Example(source="t", format="chat", messages=[
        {"role": "user", "content": "first"}, {"role": "system", "content": "mid"},
        {"role": "user", "content": "second"}, {"role": "assistant", "content": "x"}])
    [prompt] = few_shot_prompts(ChatMLTemplate(), shots[1:], [later])
    assert prompt == ("<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\na2<|im_end|>\n"
                      "<|im_start|>user\nfirst<|im_end|>\n<|im_start|>system\nmid<|im_end|>\n"
                      "<|im_start|>user\nsecond<|im_end|>\n<|im_start|>assistant\n")


def test_single_turn_shots_lose_trailing_whitespace_only():
    template = AlpacaTemplate()
    shot = Example(source="t", format="alpaca", messages=[{"role": "user", "content": "q"},
                                                          {"role": "assistant", "content": "  a \n"}],
                   fields={"instruction": "q", "input": "", "output": "  a \n"})
    [prompt] = few_shot_prompts(template, [shot], [_ex("q2", "a2")])
    assert prompt == template.render(shot).rstrip() + "\n\n" + template.render_prompt(_ex("q2", "a2"))
    assert template.render(shot) != template.render(shot).rstrip()


def test_the_models_own_template_also_gets_a_conversation():
    tok = build_tokenizer()
    [prompt] = few_shot_prompts(ModelTemplate(tok), [_ex("q1", "a1")], [_ex("q2", "a2")])
    chat = Example(source="t", format="chat", messages=[{"role": "user", "content": "q1"},
                   {"role": "assistant", "content": "a1"}, {"role": "user", "content": "q2"}])
    assert prompt == ModelTemplate(tok).render_prompt(chat) and prompt.count("q1") == 1
    items = [_ex("q2", "a2")]
    assert few_shot_prompts(AlpacaTemplate(), [], items) == items and few_shot_prompts(AlpacaTemplate(), [], items) is not items
