"""lmtune/train/callbacks.py called directly, with the Trainer's own state and control objects and
real files: metrics.jsonl rows, the NaN/inf stop, the checkpoint marker and the ranks' vote on
non-finite weights, GRPO's warning on groups without spread, the progress bar's postfix. No training. What the callbacks do on --resume:
test_resume.py."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from transformers.trainer_callback import TrainerControl, TrainerState

from lmtune.train.callbacks import (ConsoleProgress, GroupSpreadWatch, MarkCheckpointComplete, MetricsJsonl,
                                    NonFiniteGuard, group_spread_warning)
from lmtune.run.layout import COMPLETE_MARKER, checkpoint_is_complete, checkpoint_manifest


def _state(step=0, epoch=None, zero=True, max_steps=10):
    return TrainerState(global_step=step, epoch=epoch, is_world_process_zero=zero, max_steps=max_steps)


# ---------------------------------------------------------------- MetricsJsonl

def test_metrics_rows_carry_step_epoch_and_eval_perplexity(tmp_path):
    cb, path = MetricsJsonl(tmp_path / "metrics.jsonl"), tmp_path / "metrics.jsonl"
    cb.on_log(None, _state(3, 0.123456), TrainerControl(), logs={"loss": 1.5, "learning_rate": 1e-4})
    cb.on_log(None, _state(4, None), TrainerControl(), logs={"eval_loss": 2.0})
    cb.on_log(None, _state(5, 1.0), TrainerControl(), logs={"eval_loss": 80.0})
    cb.on_log(None, _state(6, 1.0), TrainerControl(), logs={})          # nothing logged: no row
    cb.on_log(None, _state(6, 1.0, zero=False), TrainerControl(), logs={"loss": 1.0})  # other ranks: no row
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows == [{"step": 3, "epoch": 0.1235, "loss": 1.5, "learning_rate": 1e-4},
                    {"step": 4, "epoch": 0.0, "eval_loss": 2.0, "eval_perplexity": math.exp(2.0)},
                    {"step": 5, "epoch": 1.0, "eval_loss": 80.0, "eval_perplexity": math.exp(50.0)}]


def test_training_rows_carry_tokens_per_second_without_evaluation_time(tmp_path, monkeypatch):
    """Tokens since the previous training row over the seconds since it; an evaluation's time in
    between is not counted; a resumed run (no count at its start) begins at its second row."""
    from lmtune.train import callbacks

    clock = [100.0]
    monkeypatch.setattr(callbacks, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    cb, path = MetricsJsonl(tmp_path / "metrics.jsonl"), tmp_path / "metrics.jsonl"
    cb.on_train_begin(None, _state(0), TrainerControl())
    for seconds, logs in ((2.0, {"loss": 2.0, "num_tokens": 400.0}), (1.0, {"loss": 1.9, "num_tokens": 600.0}),
                          (30.0, {"eval_loss": 2.1}), (4.0, {"loss": 1.8, "num_tokens": 1400.0})):
        clock[0] += seconds
        cb.on_log(None, _state(1), TrainerControl(), logs=logs)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert [r.get("tokens_per_second") for r in rows] == [200.0, 200.0, None, 200.0]
    resumed = MetricsJsonl(tmp_path / "resumed.jsonl")
    resumed.on_train_begin(None, _state(5), TrainerControl())
    for tokens in (1000.0, 1300.0):
        clock[0] += 3.0
        resumed.on_log(None, _state(6), TrainerControl(), logs={"loss": 1.0, "num_tokens": tokens})
    rows = [json.loads(line) for line in (tmp_path / "resumed.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r.get("tokens_per_second") for r in rows] == [None, 100.0]


# ---------------------------------------------------------------- NonFiniteGuard

@pytest.mark.parametrize("key", ["loss", "grad_norm", "eval_loss"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_guard_stops_at_the_first_non_finite_value_without_saving(key, value):
    guard, control = NonFiniteGuard(), TrainerControl()
    guard.on_log(None, _state(4), control, logs={"loss": 1.0, "grad_norm": 0.5})
    assert guard.bad is None and not control.should_training_stop
    control.should_save = True
    guard.on_log(None, _state(5), control, logs={key: value, "learning_rate": 1e-3})
    assert control.should_training_stop and control.should_save is False
    assert guard.bad["step"] == 5 and guard.bad["key"] == key
    assert guard.bad["value"] == value or (math.isnan(value) and math.isnan(guard.bad["value"]))
    guard.on_log(None, _state(6), control, logs={"loss": float("inf")})  # the first one is kept
    assert guard.bad["step"] == 5


def test_guard_reports_the_first_bad_key_in_order_and_ignores_empty_logs():
    guard, control = NonFiniteGuard(), TrainerControl()
    guard.on_log(None, _state(1), control, logs=None)
    guard.on_log(None, _state(1), control, logs={"learning_rate": float("nan")})  # not a watched value
    assert guard.bad is None and not control.should_training_stop
    guard.on_log(None, _state(2), control, logs={"eval_loss": float("inf"), "grad_norm": float("nan")})
    assert guard.bad["key"] == "grad_norm"
    guard = NonFiniteGuard()
    guard.on_log(None, _state(2), control, logs={"grad_norm": torch.tensor(float("nan"))})  # a tensor norm
    assert guard.bad["key"] == "grad_norm" and math.isnan(guard.bad["value"])


# ---------------------------------------------------------------- GroupSpreadWatch

def _grpo_row(flat, task=None):
    """The keys TRL's GRPOTrainer logs that the watch reads (values as in benchmarks/README.md's runs)."""
    row = {"loss": 0.01, "reward": 1.0, "reward_std": 0.2, "frac_reward_zero_std": flat, "kl": 0.05}
    if task is not None:
        row["rewards/task/mean"] = task
    return row


def test_spread_warning_names_a_task_reward_that_never_pays():
    # the catalogue at temperature 1.5: format varied (groups had spread) but task stayed ~0
    text = group_spread_warning([_grpo_row(0.4, 0.0), _grpo_row(0.25, 0.006), _grpo_row(0.45, 0.003)], 20)
    assert text.startswith("GRPO steps 1-20: the sampled answers earned almost no task reward (mean 0.003)")
    assert "lower rl.temperature" in text and "rl.num_generations" in text
    assert group_spread_warning([_grpo_row(0.4, 0.012)], 20) is None    # just above the floor: learning


@pytest.mark.parametrize("task, advice", [(0.2, "lower rl.temperature"), (0.9, "harder prompts"),
                                          (None, "lower rl.temperature")])
def test_spread_warning_on_flat_groups_says_why_by_the_task_reward(task, advice):
    text = group_spread_warning([_grpo_row(0.8, task), _grpo_row(0.9, task)], 8)
    assert text.startswith("GRPO steps 1-8: 85% of the groups scored every answer the same")
    assert advice in text and ("mean task reward" in text) == (task is not None)
    other = "harder prompts" if advice != "harder prompts" else "lower rl.temperature"
    assert other not in text


def test_spread_warning_averages_every_row_not_the_last():
    assert group_spread_warning([_grpo_row(0.75, 0.3), _grpo_row(0.85, 0.3)], 4) is not None   # mean 0.8
    assert group_spread_warning([_grpo_row(1.0, 0.3), _grpo_row(0.5, 0.3)], 4) is None         # mean 0.75
    assert group_spread_warning([_grpo_row(0.39, 0.22)], 20) is None    # the catalogue at 0.7: learned


def test_watch_judges_once_after_its_window_on_rank_zero(capsys):
    watch = GroupSpreadWatch()
    watch.on_train_begin(None, _state(0, max_steps=300), TrainerControl())
    assert watch.window == 20
    watch.on_log(None, _state(10, max_steps=300), TrainerControl(), logs=_grpo_row(1.0, 0.0))
    watch.on_log(None, _state(12, zero=False, max_steps=300), TrainerControl(), logs=_grpo_row(0.0, 0.0))
    watch.on_log(None, _state(14, max_steps=300), TrainerControl(), logs={"eval_loss": 1.0})  # not GRPO's row
    assert watch.warning is None and not watch.done
    watch.on_log(None, _state(20, max_steps=300), TrainerControl(), logs=_grpo_row(0.6, 0.0))
    assert watch.warning.startswith("GRPO steps 1-20: the sampled answers earned almost no task reward")
    assert capsys.readouterr().err.strip() == f"warning: {watch.warning}"
    watch.on_log(None, _state(22, max_steps=300), TrainerControl(), logs=_grpo_row(0.0, 1.0))
    assert watch.warning.startswith("GRPO steps 1-20") and capsys.readouterr().err == ""


def test_watch_window_is_a_quarter_of_a_short_run_and_a_resumed_run_is_not_judged_again(capsys):
    watch = GroupSpreadWatch()
    watch.on_train_begin(None, _state(0, max_steps=12), TrainerControl())
    assert watch.window == 3
    watch.on_log(None, _state(2, max_steps=12), TrainerControl(), logs=_grpo_row(1.0, 0.5))
    watch.on_log(None, _state(3, max_steps=12), TrainerControl(), logs=_grpo_row(0.2, 0.5))
    assert watch.done and watch.warning is None      # mean 0.6: enough spread
    resumed = GroupSpreadWatch()
    resumed.on_train_begin(None, _state(40, max_steps=300), TrainerControl())
    resumed.on_log(None, _state(40, max_steps=300), TrainerControl(), logs=_grpo_row(1.0, 0.0))
    assert resumed.warning is None and capsys.readouterr().err == ""


# ---------------------------------------------------------------- MarkCheckpointComplete

def _checkpoint(tmp_path, step):
    ckpt = tmp_path / f"checkpoint-{step}"
    ckpt.mkdir()
    (ckpt / "adapter_model.safetensors").write_bytes(b"w" * 40)
    (ckpt / "trainer_state.json").write_text("{}")
    return ckpt


def test_marker_lists_every_file_after_the_card(tmp_path):
    ckpt = _checkpoint(tmp_path, 7)
    cb = MarkCheckpointComplete(card=lambda state: f"card at step {state.global_step}\n")
    control = TrainerControl()
    cb.on_save(SimpleNamespace(output_dir=str(tmp_path)), _state(7), control, model=torch.nn.Linear(2, 2))
    marker = json.loads((ckpt / COMPLETE_MARKER).read_text())
    assert marker == {"step": 7, "files": checkpoint_manifest(ckpt)}
    assert set(marker["files"]) == {"adapter_model.safetensors", "trainer_state.json", "README.md"}
    assert (ckpt / "README.md").read_text() == "card at step 7\n"
    assert (ckpt / COMPLETE_MARKER).read_text().startswith('{\n "step": 7')  # indent=1
    assert checkpoint_is_complete(ckpt) and cb.bad is None and not control.should_training_stop


def test_marker_without_card_other_ranks_and_missing_directories(tmp_path):
    ckpt = _checkpoint(tmp_path, 3)
    args = SimpleNamespace(output_dir=str(tmp_path))
    MarkCheckpointComplete().on_save(args, _state(3, zero=False), TrainerControl(), model=None)
    assert not (ckpt / COMPLETE_MARKER).exists()
    MarkCheckpointComplete().on_save(args, _state(4), TrainerControl(), model=None)  # no checkpoint-4
    assert not (tmp_path / "checkpoint-4").exists()
    MarkCheckpointComplete().on_save(args, _state(3), TrainerControl(), model=None)
    assert sorted(p.name for p in ckpt.iterdir()) == sorted([COMPLETE_MARKER, "adapter_model.safetensors",
                                                             "trainer_state.json"])


def test_a_checkpoint_with_non_finite_trainable_weights_gets_no_marker_and_stops(tmp_path):
    ckpt = _checkpoint(tmp_path, 5)
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.fill_(float("nan"))
    model[0].weight.requires_grad_(False)       # frozen: not checked
    cb, control = MarkCheckpointComplete(), TrainerControl()
    cb.on_save(SimpleNamespace(output_dir=str(tmp_path)), _state(5), control, model=model)
    assert (ckpt / COMPLETE_MARKER).exists() and cb.bad is None  # frozen NaN weights are not trained ones
    with torch.no_grad():
        model[1].bias[1] = float("inf")
    (ckpt / COMPLETE_MARKER).unlink()
    cb.on_save(SimpleNamespace(output_dir=str(tmp_path)), _state(5), control, model=model)
    assert not (ckpt / COMPLETE_MARKER).exists() and control.should_training_stop
    assert cb.bad["step"] == 5 and cb.bad["key"] == "weight 1.bias" and math.isnan(cb.bad["value"])


@pytest.fixture
def one_rank_group(tmp_path):
    """A real torch.distributed group of one process (gloo): the all-reduce path of on_save runs."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        yield dist
    finally:
        dist.destroy_process_group()


def test_under_a_process_group_the_ranks_vote_on_non_finite_weights(tmp_path, one_rank_group, monkeypatch):
    from lmtune.train.callbacks import _on_any_rank

    model = torch.nn.Linear(2, 2)
    assert _on_any_rank(False, model) is False and _on_any_rank(True, model) is True
    assert _on_any_rank(True, None) is True and _on_any_rank(False, None) is False
    ckpt = _checkpoint(tmp_path, 4)
    args = SimpleNamespace(output_dir=str(tmp_path))
    cb, control = MarkCheckpointComplete(), TrainerControl()
    cb.on_save(args, _state(4), control, model=model)
    assert (ckpt / COMPLETE_MARKER).exists() and cb.bad is None
    seen = []

    def another_rank_is_bad(t, op):  # what all_reduce(MAX) returns when another rank voted 1
        seen.append((t.device.type, t.tolist(), op))
        t.fill_(1.0)

    monkeypatch.setattr(one_rank_group, "all_reduce", another_rank_is_bad)
    (ckpt / COMPLETE_MARKER).unlink()
    cb.on_save(args, _state(4), control, model=model)
    assert seen == [("cpu", [0.0], one_rank_group.ReduceOp.MAX)]
    assert cb.bad["key"] == "weight (on another rank)" and control.should_training_stop
    assert not (ckpt / COMPLETE_MARKER).exists()


class _VoteSeen(Exception):
    pass


def _stop_at_the_all_reduce():
    """A dispatch mode that raises _VoteSeen(device) when torch.distributed's all-reduce op is called:
    the device of the tensor the ranks vote with (a meta tensor could not be read back anyway)."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    class Stop(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if "allreduce" in str(func):
                raise _VoteSeen(*[t.device for t in tree_leaves(args) if torch.is_tensor(t)])
            return func(*args, **(kwargs or {}))

    return Stop()


def test_the_ranks_vote_on_the_models_device(tmp_path, one_rank_group):
    """NCCL only reduces tensors on the GPU: the vote tensor is made on the model's device. A frozen
    model on the meta device stands in for one on a GPU (frozen: on_save reads no weight values)."""
    from lmtune.train.callbacks import _on_any_rank

    model = torch.nn.Linear(2, 2, device="meta").requires_grad_(False)
    save = MarkCheckpointComplete()
    for vote in (lambda: _on_any_rank(True, model),
                 lambda: save.on_save(SimpleNamespace(output_dir=str(tmp_path)), _state(4), TrainerControl(), model=model)):
        with pytest.raises(_VoteSeen) as seen, _stop_at_the_all_reduce():
            vote()
        assert seen.value.args == (torch.device("meta"),)


# ---------------------------------------------------------------- ConsoleProgress

def test_progress_bar_starts_where_the_run_stands_and_shows_loss_lr_and_tokens_per_second(monkeypatch):
    bar = ConsoleProgress()
    args, control = SimpleNamespace(), TrainerControl()
    bar.on_train_begin(args, _state(4, max_steps=10), control)
    assert ConsoleProgress.current is bar and (bar.step, bar.max_steps) == (4, 10)
    assert (bar.training_bar.total, bar.training_bar.n) == (10, 4)
    clock = iter([100.0, 102.0, 102.0])
    monkeypatch.setattr("lmtune.train.callbacks.time.monotonic", lambda: next(clock))
    bar.on_log(args, _state(5), control, logs={"loss": 1.23456, "learning_rate": 2e-4, "num_tokens": 1000.0})
    assert bar.training_bar.postfix == "loss=1.2346, lr=2.00e-04"  # no rate from one point
    bar.on_log(args, _state(6), control, logs={"loss": 1.0, "num_tokens": 3000.0})
    assert bar.training_bar.postfix == "loss=1.0000, lr=0.00e+00, tok/s=1000"
    bar.on_log(args, _state(7), control, logs={"loss": 1.0, "num_tokens": 2000.0})  # counter went back: no rate
    assert "tok/s" not in bar.training_bar.postfix
    clock = iter([103.0, 103.0, 104.0])
    bar.on_log(args, _state(8), control, logs={"loss": 1.0, "num_tokens": 2500.0})
    bar.on_log(args, _state(8), control, logs={"loss": 1.0, "num_tokens": 2600.0})  # same instant: no rate
    assert "tok/s" not in bar.training_bar.postfix
    bar.on_log(args, _state(9), control, logs={"loss": 1.0, "num_tokens": 2600.0})  # no new tokens: 0/s
    assert bar.training_bar.postfix.endswith("tok/s=0")
    bar.on_step_end(args, _state(7), control)
    assert bar.step == 7 and bar.training_bar.n == 7
    bar.on_train_end(args, _state(7), control)


def test_progress_bar_redraws_with_the_new_loss_at_once(capsys):
    bar = ConsoleProgress()
    bar.on_train_begin(SimpleNamespace(), _state(0), TrainerControl())
    capsys.readouterr()
    bar.on_log(None, _state(1), TrainerControl(), logs={"loss": 3.21, "learning_rate": 1e-3})
    assert "loss=3.2100, lr=1.00e-03" in capsys.readouterr().err


def test_progress_bar_prints_one_line_per_evaluation(capsys):
    bar = ConsoleProgress()
    bar.on_train_begin(SimpleNamespace(), _state(0), TrainerControl())
    writes = []
    bar.training_bar.write = writes.append
    bar.on_log(None, _state(3), TrainerControl(), logs={"eval_loss": 2.0})
    bar.on_log(None, _state(4), TrainerControl(), logs={"eval_loss": 99.0})
    bar.on_log(None, _state(4), TrainerControl(), logs={"train_runtime": 1.0})  # neither: nothing
    assert writes == ["step 3: validation loss 2.0000 (perplexity 7.39)",
                      f"step 4: validation loss 99.0000 (perplexity {math.exp(50):.2f})"]
    bar.on_log(None, _state(5, zero=False), TrainerControl(), logs={"eval_loss": 1.0})
    bar.on_log(None, _state(5), TrainerControl(), logs=None)
    assert len(writes) == 2


def test_progress_bar_only_on_rank_zero_and_the_eval_bar_sized_to_the_loader():
    bar = ConsoleProgress()
    bar.on_train_begin(SimpleNamespace(), _state(2, zero=False), TrainerControl())
    assert bar.training_bar is None and bar.step == 2
    bar.on_log(None, _state(3, zero=False), TrainerControl(), logs={"loss": 1.0})  # no bar: nothing, no error
    bar = ConsoleProgress()
    bar.on_train_begin(SimpleNamespace(), _state(0), TrainerControl())
    bar.on_prediction_step(SimpleNamespace(), _state(0), TrainerControl(), eval_dataloader=[1, 2, 3])
    assert bar.prediction_bar.total == 3 and bar.prediction_bar.n == 1 and bar.prediction_bar.leave is False
    assert bar.prediction_bar.desc == "eval" and bar.training_bar.desc == "train"
    assert callable(bar.prediction_bar.dynamic_ncols) and callable(bar.training_bar.dynamic_ncols)
    first = bar.prediction_bar
    bar.on_prediction_step(SimpleNamespace(), _state(0), TrainerControl(), eval_dataloader=[1, 2, 3])
    assert bar.prediction_bar is first and first.n == 2
