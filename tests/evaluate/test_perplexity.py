"""lmtune/evaluate/perplexity.py without a training run: labels from the masks, collation, loss and
perplexity against cross-entropy by hand on a tiny model, truncation like training, text loss after
a BOS, the progress bars and the model's device."""

from __future__ import annotations

import math

import pytest
import torch

from lmtune.evaluate.perplexity import (IGNORE, LossResult, _collate, _ppl, dataset_loss, labels_from_masks,
                                        sequence_loss, text_loss)
from tiny_models import InputsSeen, meta_model, save_tiny_model

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
