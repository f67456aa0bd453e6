"""lmtune/train/trainer.py called directly on a real LmtuneSFTTrainer over a tiny model: when the
label-logits loss applies, its value against a cross-entropy computed by hand (normalisation, the
multi-process factor, no labels at all), the token metrics it logs, and the resume at max_steps.
No training run."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from lmtune.train.trainer import LmtuneSFTTrainer
from tiny_models import save_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny") / "base", "llama")


def _trainer(tiny_dir, tmp_path, model=None, lm_head="label_logits", **args):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    # activation checkpointing off, as lmtune's default
    config = SFTConfig(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, max_steps=4,
                       per_device_train_batch_size=2, save_strategy="no", packing=False, max_length=32,
                       activation_checkpointing=False, **args)
    data = Dataset.from_dict({"input_ids": [[5, 6, 7, 8, 9, 10], [11, 12, 13, 14]] * 2,
                              "completion_mask": [[0, 0, 0, 1, 1, 1], [0, 0, 1, 1]] * 2})
    model = model if model is not None else AutoModelForCausalLM.from_pretrained(str(tiny_dir))
    return LmtuneSFTTrainer(lm_head=lm_head, model=model, args=config, train_dataset=data,
                            processing_class=AutoTokenizer.from_pretrained(str(tiny_dir)))


def _batch():
    # column 4 holds token 100 in both rows (a label value like any other); column 1 has no label
    ids = torch.tensor([[5, 6, 7, 8, 100, 10], [11, 12, 13, 14, 100, 1]])
    labels = torch.tensor([[-100, -100, -100, 8, 100, 10], [-100, -100, 13, 14, 100, -100]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def _parallel(monkeypatch, t, config) -> None:
    """accelerate's parallelism config (a read-only property) as a multi-rank launch would set it."""
    monkeypatch.setattr(type(t.accelerator), "parallelism_config", property(lambda self: config))


def _by_hand(model, batch, divisor=None):
    """Cross-entropy of the full logits at the shifted labels: what TRL's loss computes."""
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    target = batch["labels"][:, 1:]
    nll = F.cross_entropy(logits[:, :-1].flatten(0, 1), target.flatten(), ignore_index=-100, reduction="sum")
    return nll / (divisor if divisor is not None else (target != -100).sum())


# ---------------------------------------------------------------- when the label-logits path runs

def test_label_logits_applies_only_when_nothing_trl_handles_is_asked_for(tiny_dir, tmp_path, monkeypatch):
    t = _trainer(tiny_dir, tmp_path)
    b = _batch()
    assert t.lm_head == "label_logits" and t._takes_logits_to_keep is True
    assert t._label_logits_apply(b, False) is True
    assert not t._label_logits_apply(b, True)                         # caller wants outputs
    assert not t._label_logits_apply({k: v for k, v in b.items() if k != "labels"}, False)
    assert not t._label_logits_apply({**b, "shift_labels": b["labels"]}, False)
    for name, value in (("lm_head", "fused"), ("aux_loss_enabled", True), ("label_smoother", object()),
                        ("compute_loss_func", lambda *a, **k: 0), ("_takes_logits_to_keep", False)):
        saved = getattr(t, name)
        setattr(t, name, value)
        assert not t._label_logits_apply(b, False), name
        setattr(t, name, saved)
    t.args.loss_type = "dft"
    assert not t._label_logits_apply(b, False)
    t.args.loss_type = "nll"
    _parallel(monkeypatch, t, SimpleNamespace(sp_enabled=True))     # sequence parallel: TRL's path
    assert not t._label_logits_apply(b, False)
    for config in (SimpleNamespace(sp_enabled=False), SimpleNamespace(), None):
        _parallel(monkeypatch, t, config)
        assert t._label_logits_apply(b, False)


def test_models_without_logits_to_keep_keep_trls_path(tiny_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    class NoKeep(LlamaForCausalLM):                  # as older remote code: no such method at all
        @property
        def _supports_logits_to_keep(self):
            raise AttributeError("_supports_logits_to_keep")

    model = NoKeep.from_pretrained(str(tiny_dir))
    t = _trainer(tiny_dir, tmp_path, model=model)
    assert t._takes_logits_to_keep is False and not t._label_logits_apply(_batch(), False)
    peft = get_peft_model(AutoModelForCausalLM.from_pretrained(str(tiny_dir)), LoraConfig(r=2, target_modules=["q_proj"]))
    assert _trainer(tiny_dir, tmp_path, model=peft, lm_head="fused")._takes_logits_to_keep is True
    # the model passed by position, as SFTTrainer allows; no lm_head: TRL's fused head
    from trl import SFTConfig

    plain = LmtuneSFTTrainer(AutoModelForCausalLM.from_pretrained(str(tiny_dir)),
                             args=SFTConfig(output_dir=str(tmp_path / "o2"), report_to=[], use_cpu=True),
                             train_dataset=_trainer(tiny_dir, tmp_path).train_dataset)
    assert plain.lm_head == "fused" and plain._takes_logits_to_keep is True
    assert not plain._label_logits_apply(_batch(), False)


# ---------------------------------------------------------------- the loss

def _predicted(model, batch, wrong: int = 1):
    """`batch` with its labels set to what the model predicts there, but `wrong` of them: a token
    accuracy that is neither 0 nor 1."""
    with torch.no_grad():
        pred = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.argmax(-1)
    labels = batch["labels"].clone()
    at = (labels[:, 1:] != -100).nonzero()
    for i, (row, col) in enumerate(at.tolist()):
        token = pred[row, col].item()
        labels[row, col + 1] = (token + 1) % 300 if i < wrong else token
    return {**batch, "labels": labels}


def _accuracy_by_hand(model, batch) -> float:
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    target = batch["labels"][:, 1:]
    mask = target != -100
    return ((logits[:, :-1].argmax(-1) == target) & mask).sum().item() / mask.sum().item()


def test_loss_matches_the_cross_entropy_of_the_full_logits(tiny_dir, tmp_path):
    t = _trainer(tiny_dir, tmp_path)
    t.model.eval()
    b = _batch()
    seen = {}
    head = t.model.lm_head.register_forward_hook(lambda m, args, out: seen.update(positions=args[0].shape[1]))
    whole = t.model.register_forward_hook(lambda m, args, out: seen.update(cache=out.past_key_values))
    loss = t.compute_loss(t.model, dict(b)).detach()
    # only the 4 positions whose next token is a label reach the head, and no KV cache is built
    assert seen == {"positions": 4, "cache": None}
    head.remove()
    whole.remove()
    torch.testing.assert_close(loss, _by_hand(t.model, b), rtol=1e-6, atol=1e-6)
    assert t._metrics["eval"]["mean_token_accuracy"] == [pytest.approx(_accuracy_by_hand(t.model, b))]
    guessed = _predicted(t.model, b)
    t.compute_loss(t.model, dict(guessed))
    assert t._metrics["eval"]["mean_token_accuracy"][-1] == pytest.approx(5 / 6)   # 6 labels, 1 wrong
    assert _accuracy_by_hand(t.model, guessed) == pytest.approx(5 / 6)
    torch.testing.assert_close(t.compute_loss(t.model, dict(b), num_items_in_batch=torch.tensor(50)).detach(),
                               _by_hand(t.model, b, 50), rtol=1e-6, atol=1e-6)
    loss, outputs = t.compute_loss(t.model, dict(b), return_outputs=True)    # TRL's path, with its outputs
    assert outputs.logits.shape[:2] == (2, 6)
    torch.testing.assert_close(loss.detach(), _by_hand(t.model, b), rtol=1e-5, atol=1e-5)
    t.lm_head = "fused"                                                      # TRL's path: the same loss
    torch.testing.assert_close(t.compute_loss(t.model, dict(b), num_items_in_batch=torch.tensor(50)).detach(),
                               _by_hand(t.model, b, 50), rtol=1e-5, atol=1e-5)
    t.lm_head = "label_logits"
    # one label: divided by 1; none: zero, not nan
    one = {**b, "labels": torch.tensor([[-100, -100, -100, -100, -100, 10], [-100] * 6])}
    torch.testing.assert_close(t.compute_loss(t.model, dict(one)).detach(), _by_hand(t.model, one), rtol=1e-6,
                               atol=1e-6)
    none = {**b, "labels": torch.full((2, 6), -100)}
    assert t.compute_loss(t.model, dict(none)).item() == 0.0


def test_loss_scales_by_the_data_parallel_ranks_when_tokens_are_counted_across_devices(tiny_dir, tmp_path,
                                                                                         monkeypatch):
    t = _trainer(tiny_dir, tmp_path)
    t.model.eval()
    b, items = _batch(), torch.tensor(50)
    ref = _by_hand(t.model, b, 50)
    monkeypatch.setattr(type(t.accelerator), "num_processes", property(lambda self: 3))
    assert t.args.average_tokens_across_devices is True
    torch.testing.assert_close(t.compute_loss(t.model, dict(b), num_items_in_batch=items).detach(), 3 * ref)
    torch.testing.assert_close(t.compute_loss(t.model, dict(b)).detach(), _by_hand(t.model, b))  # no count given
    t.get_tp_size = lambda: 2                                  # 3 // 2 data-parallel groups
    torch.testing.assert_close(t.compute_loss(t.model, dict(b), num_items_in_batch=items).detach(), ref)
    t.args.average_tokens_across_devices = False
    t.get_tp_size = lambda: 1
    torch.testing.assert_close(t.compute_loss(t.model, dict(b), num_items_in_batch=items).detach(), ref)


# ---------------------------------------------------------------- logged token metrics

def test_token_accuracy_and_token_count_as_trl_logs_them(tiny_dir, tmp_path, monkeypatch):
    t = _trainer(tiny_dir, tmp_path)
    logits = torch.zeros(1, 4, 10)
    for pos, tok in enumerate([2, 5, 7, 1]):
        logits[0, pos, tok] = 1.0
    target = torch.tensor([[2, 5, 9, 1]])
    mask = torch.tensor([[True, True, True, False]])                    # 2 of 3 labelled positions right
    ids = torch.arange(12).view(2, 6)
    t.model.train()
    start = t._total_train_tokens
    t._log_token_metrics({"input_ids": ids, "attention_mask": torch.tensor([[1] * 6, [1] * 4 + [0] * 2])},
                         logits, target, mask)
    assert t._metrics["train"]["mean_token_accuracy"] == [pytest.approx(2 / 3)]
    assert t._total_train_tokens == start + 10 and t._metrics["train"]["num_tokens"] == [start + 10]
    t._log_token_metrics({"input_ids": ids}, logits, target, mask)      # packed, padding-free: every position
    assert t._total_train_tokens == start + 22 and t._metrics["train"]["num_tokens"] == [start + 22]
    _parallel(monkeypatch, t, SimpleNamespace(tp_size=2))            # each tensor-parallel rank saw it
    assert t._tp_ranks() == 2
    t._log_token_metrics({"input_ids": torch.arange(7).view(1, 7)}, logits, target, mask)
    assert t._total_train_tokens == start + 25                         # 7 // 2, a whole count
    t.model.eval()                                                     # evaluation counts no tokens
    t._log_token_metrics({"input_ids": ids}, logits, target, torch.zeros(1, 4, dtype=torch.bool))
    assert t._metrics["eval"]["mean_token_accuracy"] == [0.0]           # nothing labelled: 0, not nan
    t._log_token_metrics({"input_ids": ids}, logits, target, torch.tensor([[True, False, False, False]]))
    assert t._metrics["eval"]["mean_token_accuracy"] == [0.0, 1.0]      # one label, right
    assert t._metrics["eval"]["num_tokens"] == [start + 25] and t._total_train_tokens == start + 25
    _parallel(monkeypatch, t, None)
    assert t._tp_ranks() == 1


# ---------------------------------------------------------------- resume at max_steps

@pytest.mark.parametrize("step, max_steps, expected", [(4, 4, (3, 0)), (5, 4, (3, 0)), (4, 6, (0, 4)),
                                                       (12, 20, (1, 2))])
def test_a_checkpoint_at_max_steps_leaves_nothing_to_train(tiny_dir, tmp_path, step, max_steps, expected):
    from transformers.trainer_callback import TrainerState

    t = _trainer(tiny_dir, tmp_path)
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    TrainerState(global_step=step, max_steps=max_steps, train_batch_size=2).save_to_json(str(ckpt / "trainer_state.json"))
    assert t._init_training_state(max_steps, 10, 3, str(ckpt), None) == expected
    assert (t.state.global_step, t.state.max_steps, t.state.num_train_epochs) == (step, max_steps, 3)
    assert t._init_training_state(max_steps, 10, 3, None, None) == (0, 0)   # a fresh start
    assert (t.state.global_step, t.state.max_steps, t.state.num_train_epochs) == (0, max_steps, 3)
