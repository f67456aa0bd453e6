"""lmtune/train.py's trainer, fit, save and finish called function by function (the other half of
test_train_py_units.py, whose fixtures and helpers this file shares): what reaches the trainer, the
resume point and the non-finite stop, the final save on each rank and engine, the closing lines, and
setup -> save -> after-train evaluation around an untrained adapter. Trainer stand-ins appear only
where one CPU process cannot take the branch (another rank, FSDP/DeepSpeed)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import lmtune.train as lt
from lmtune.callbacks import MarkCheckpointComplete, NonFiniteGuard
from lmtune.errors import UserError
from lmtune.rundir import RunDir
from test_train_py_units import _cfg, _launched, _model, _tokenizer, tiny  # noqa: F401 (tiny: a fixture)


# ---------------------------------------------------------------- what reaches the trainer

def _setup(tiny, cfg, precision="fp32"):
    """train.py's _Setup from the real parts (tokenizer, prepared data, a LoRA model)."""
    from lmtune import methods
    from lmtune.data import prepare_datasets
    from lmtune.models import Device

    tok = _tokenizer(tiny)
    data = prepare_datasets(cfg.data, tok)
    model = methods.prepare(_model(tiny), cfg)
    return lt._Setup(model, tok, data.template, data, Device("cpu", False, "cpu"), precision,
                     *methods.count_parameters(model))


def test_the_trainer_gets_lmtunes_callbacks_head_and_datasets(tiny, tmp_path):
    from transformers import EarlyStoppingCallback, TrainerCallback
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from lmtune.callbacks import ConsoleProgress, MetricsJsonl

    cfg = _cfg(tiny, tmp_path / "run", "train.early_stopping_patience=3", "train.load_best=true",
               "train.eval_steps=1")
    s, extra = _setup(tiny, cfg), TrainerCallback()
    trainer = lt._build_trainer(cfg, RunDir(cfg.output.dir), s, [extra])
    cbs = trainer.callback_handler.callbacks
    assert [cb.path for cb in cbs if isinstance(cb, MetricsJsonl)] == [tmp_path / "run" / "metrics.jsonl"]
    assert sum(isinstance(cb, NonFiniteGuard) for cb in cbs) == 1
    marks = [cb for cb in cbs if isinstance(cb, MarkCheckpointComplete)]
    assert len(marks) == 1 and callable(marks[0].card)       # checkpoints get their card
    assert [cb.early_stopping_patience for cb in cbs if isinstance(cb, EarlyStoppingCallback)] == [3]
    assert extra in cbs
    from transformers.trainer_callback import TrainerState

    from lmtune.artifacts import model_card

    state = TrainerState(global_step=3, epoch=0.5, log_history=[{"loss": 1.25}])
    assert marks[0].card(state) == model_card("checkpoint", cfg, 3, 0.5, {"final_train_loss": 1.25})
    assert not any(isinstance(cb, PrinterCallback) for cb in cbs)
    assert [type(cb) for cb in cbs if isinstance(cb, ProgressCallback)] == [ConsoleProgress]
    assert trainer.lm_head == "label_logits"                  # auto on CPU
    assert trainer.model is s.model and trainer.processing_class is s.tokenizer
    assert trainer.train_dataset is not None and trainer.eval_dataset is not None
    assert (len(trainer.train_dataset), len(trainer.eval_dataset)) == (8, 2)
    assert trainer.args.eval_strategy.value == "steps" and trainer.args.load_best_model_at_end


def test_no_validation_means_no_evaluation_and_no_early_stopping(tiny, tmp_path):
    import dataclasses

    from transformers import EarlyStoppingCallback

    cfg = _cfg(tiny, tmp_path / "run", "train.early_stopping_patience=3", "train.lm_head=fused")
    s = _setup(tiny, cfg)
    whole = s.data.validation
    s.data = dataclasses.replace(s.data, validation=whole.select([]))   # empty, not None
    trainer = lt._build_trainer(cfg, RunDir(cfg.output.dir), s)
    assert trainer.eval_dataset is None and trainer.args.eval_strategy.value == "no"
    assert not any(isinstance(cb, EarlyStoppingCallback) for cb in trainer.callback_handler.callbacks)
    assert trainer.lm_head == "fused"
    s.data = dataclasses.replace(s.data, validation=whole.select([0]))      # one example
    trainer = lt._build_trainer(cfg, RunDir(cfg.output.dir), s)
    assert trainer.eval_dataset is not None and len(trainer.eval_dataset) == 1


@pytest.mark.parametrize("method, precision, expected", [
    ("qlora", "fp32", torch.float32), ("lora", "fp32", torch.bfloat16), ("qlora", "bf16", torch.bfloat16)])
def test_qlora_adapters_return_to_fp32_only_with_fp32_compute(tiny, tmp_path, method, precision, expected):
    import dataclasses

    cfg = _cfg(tiny, tmp_path / "run")
    s = _setup(tiny, cfg, precision)
    for p in s.model.parameters():
        if p.requires_grad:
            p.data = p.data.to(torch.bfloat16)               # as TRL leaves QLoRA adapters
    trainer = lt._build_trainer(dataclasses.replace(cfg, method=method), RunDir(cfg.output.dir), s)
    assert {p.dtype for p in trainer.model.parameters() if p.requires_grad} == {expected}
    assert (trainer.args.bf16, trainer.args.fp16) == (precision == "bf16", False)


# ---------------------------------------------------------------- fit: resume point, non-finite stop

class _FitTrainer:
    def __init__(self, *callbacks):
        self.callback_handler = SimpleNamespace(callbacks=list(callbacks))
        self.resumed_from = "not called"

    def train(self, resume_from_checkpoint=None):
        self.resumed_from = resume_from_checkpoint


def _complete_checkpoint(run: Path, step: int) -> None:
    ckpt = run / "checkpoints" / f"checkpoint-{step}"
    ckpt.mkdir(parents=True)
    (ckpt / "adapter_model.safetensors").write_bytes(b"w")
    MarkCheckpointComplete().on_save(SimpleNamespace(output_dir=str(run / "checkpoints")),
                                     SimpleNamespace(global_step=step, is_world_process_zero=True), None, model=None)


def test_fit_resumes_from_the_last_complete_checkpoint_within_max_steps(tmp_path, capsys):
    run = tmp_path / "run"
    for step in (1, 2, 3):
        _complete_checkpoint(run, step)
    t = _FitTrainer(NonFiniteGuard())
    lt._fit(t, RunDir(run), resume=False, max_steps=2)
    assert t.resumed_from is None and capsys.readouterr().out == ""
    lt._fit(t, RunDir(run), resume=True, max_steps=2)
    assert t.resumed_from == str(run / "checkpoints" / "checkpoint-2")
    lt._fit(t, RunDir(tmp_path / "empty"), resume=True, max_steps=2)
    assert t.resumed_from is None
    assert capsys.readouterr().out.endswith("starting from step 0\n")


def test_fit_turns_a_non_finite_stop_into_an_error_naming_the_last_good_checkpoint(tmp_path):
    run = tmp_path / "run"
    guard, mark = NonFiniteGuard(), MarkCheckpointComplete()
    mark.bad = {"step": 4, "key": "weight w", "value": float("inf")}
    guard.bad = {"step": 3, "key": "loss", "value": float("nan")}
    lookalike = SimpleNamespace(bad={"step": 1, "key": "x", "value": 0.0})   # not one of lmtune's guards
    with pytest.raises(UserError) as err:
        lt._fit(_FitTrainer(lookalike, guard, mark), RunDir(run), resume=False, max_steps=5)
    assert err.value.args[0] == "training stopped at step 3: loss became nan"
    assert err.value.problems == [
        "likely causes: learning rate too high (lower train.learning_rate), fp16 overflow (use precision bf16 "
        "or fp32), or bad data",
        "no checkpoint was saved before the failure",
        "start again with a lower train.learning_rate (a new output.dir, or output.overwrite=true): --resume "
        "would restore the same learning-rate schedule"]
    _complete_checkpoint(run, 2)
    with pytest.raises(UserError) as err:
        lt._fit(_FitTrainer(NonFiniteGuard(), mark), RunDir(run), resume=False, max_steps=5)
    assert err.value.args[0] == "training stopped at step 4: weight w became inf"
    assert err.value.problems[1] == (f"last good checkpoint: {run / 'checkpoints' / 'checkpoint-2'} (its weights "
                                     "are finite; the final adapter/model was not written)")
    lt._fit(_FitTrainer(NonFiniteGuard(), MarkCheckpointComplete(), lookalike), RunDir(run), False, 5)  # no stop


# ---------------------------------------------------------------- save: other ranks, sharded weights

class _Weights:
    def __init__(self):
        self.saved = []

    def save_pretrained(self, path, **kwargs):
        self.saved.append((path, kwargs))
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "weights.safetensors").write_bytes(b"w")


class _SaveTrainer:
    """What _save/_finish read from a Trainer, for branches one CPU process never takes."""

    def __init__(self, zero=True, fsdp=False, deepspeed=False, eval_dataset=None, eval_loss=None, log=(), epoch=0.123456):
        self.zero, self.is_fsdp_enabled, self.is_deepspeed_enabled = zero, fsdp, deepspeed
        self.eval_dataset, self.eval_loss, self.model, self.saved = eval_dataset, eval_loss, _Weights(), []
        self.state = SimpleNamespace(global_step=7, epoch=epoch, log_history=list(log))

    def is_world_process_zero(self):
        return self.zero

    def save_model(self, path):
        self.saved.append(path)
        self.model.save_pretrained(path)

    def evaluate(self):
        return {"eval_loss": self.eval_loss}


def test_save_weights_per_engine_and_rank(tmp_path):
    for fsdp, ds in ((True, False), (False, True)):
        t = _SaveTrainer(zero=False, fsdp=fsdp, deepspeed=ds)      # every rank joins the gather
        lt._save_weights(t, tmp_path / "x")
        assert t.saved == [str(tmp_path / "x")]
    t = _SaveTrainer(zero=True)
    lt._save_weights(t, tmp_path / "y")
    assert t.saved == [] and t.model.saved == [(str(tmp_path / "y"), {"safe_serialization": True})]
    t = _SaveTrainer(zero=False)
    lt._save_weights(t, tmp_path / "z")
    assert t.saved == [] and t.model.saved == []


def _small_setup(tiny):
    from lmtune.data.templates import template_from_dict

    tok = _tokenizer(tiny)
    template = template_from_dict({"name": "alpaca"}, tok)
    return lt._Setup(None, tok, template, SimpleNamespace(validation=None), None, "fp32", 1234, 5678)


def test_save_on_another_rank_writes_nothing_and_reports_the_metrics(tiny, tmp_path):
    cfg = _cfg(tiny, tmp_path / "run")
    t = _SaveTrainer(zero=False, eval_dataset=["x"],
                     log=[{"loss": 1.0}, {"loss": 0.7}, {"eval_loss": 2.0}, {"loss": 0.5}])
    metrics, val = lt._save(cfg, RunDir(tmp_path / "run"), _small_setup(tiny), t, 1.23456)
    assert val is None and not (tmp_path / "run").exists()
    peak = metrics.pop("peak_memory_mb")
    assert isinstance(peak, float) and peak > 0
    assert metrics == {"method": "lora", "trainable_params": 1234, "total_params": 5678, "train_seconds": 1.23,
                       "global_step": 7, "epochs": 0.1235, "stop_at": {"max_steps": 2}, "final_train_loss": 0.5}
    metrics, _ = lt._save(cfg, RunDir(tmp_path / "run"), _small_setup(tiny), _SaveTrainer(zero=False, epoch=None), 2.0)
    assert metrics["epochs"] == 0.0 and "final_train_loss" not in metrics and "eval_loss" not in metrics


@pytest.mark.parametrize("method, name", [("full", "model"), ("lora", "adapter")])
def test_save_with_sharded_weights_gathers_on_every_rank_and_evaluates_in_the_trainer(tiny, tmp_path, monkeypatch,
                                                                                       method, name):
    run = tmp_path / "run"
    cfg = _cfg(tiny, run, f"method={method}", "distributed.backend=fsdp", "eval.final_val_loss=true")
    s = _small_setup(tiny)
    stale = run / f".{name}.staging" / "stale.txt"      # left by a run killed while saving
    stale.parent.mkdir(parents=True)
    stale.write_text("old")
    _launched(monkeypatch, 1)
    t = _SaveTrainer(zero=False, fsdp=True, eval_dataset=["x"], eval_loss=60.0)
    metrics, val = lt._save(cfg, RunDir(run), s, t, 1.0)
    assert stale.is_file()                               # only rank 0 clears the staging directory
    stale.write_text("old")
    assert t.saved == [str(run / f".{name}.staging")] and val is None
    assert (metrics["eval_loss"], metrics["eval_perplexity"]) == (60.0, math.exp(50.0))
    assert not (run / name).exists() and not (run / "train_summary.json").exists()   # rank 0 moves it
    _launched(monkeypatch, 0)
    run.mkdir(exist_ok=True)
    t = _SaveTrainer(zero=True, fsdp=True, eval_dataset=["x"], eval_loss=1.5)
    metrics, val = lt._save(cfg, RunDir(run), s, t, 1.0)
    assert t.saved == [str(run / f".{name}.staging")] and not (run / f".{name}.staging").exists()
    assert (metrics["eval_loss"], metrics["eval_perplexity"]) == (1.5, math.exp(1.5))
    files = {p.name for p in (run / name).iterdir()}
    assert {"weights.safetensors", "tokenizer.json", "lmtune_template.json", "README.md"} <= files
    assert "stale.txt" not in files                      # rank 0 started from an empty staging directory
    assert json.loads((run / name / "lmtune_template.json").read_text()) == s.template.to_dict()
    assert json.loads((run / "train_summary.json").read_text()) == metrics
    # eval.after_train=false alone: no final pass, not even the Trainer's
    t = _SaveTrainer(zero=True, fsdp=True, eval_dataset=["x"], eval_loss=1.5)
    metrics, val = lt._save(_cfg(tiny, run, f"method={method}", "distributed.backend=fsdp"), RunDir(run), s, t, 1.0)
    assert "eval_loss" not in metrics and val is None


# ---------------------------------------------------------------- finish: notes, summary, artifacts

_METRICS = {"global_step": 7, "train_seconds": 12.6, "peak_memory_mb": 345.6}


def test_summary_and_artifact_lines(tiny, tmp_path, capsys):
    run = RunDir(tmp_path / "run")
    for method, name in (("lora", "adapter"), ("full", "model")):
        cfg = _cfg(tiny, run.root, f"method={method}")
        lt._finish(cfg, run, _small_setup(tiny), _SaveTrainer(), _METRICS, quiet=False)
        assert capsys.readouterr().out == (
            f"\ntrainable params: 1,234 (21.73% of the base model's 5,678, tied embeddings counted once), "
            f"{method}, 7 steps in 13 s, peak memory 346 MB\n"
            f"artifacts: {run.root}/{name}/ (weights), metrics.jsonl, tensorboard/\n")
    lt._finish(_cfg(tiny, run.root), run, _small_setup(tiny), _SaveTrainer(), _METRICS, quiet=True)
    assert capsys.readouterr().out == "" and not run.root.exists()


def test_sharded_weights_leave_the_evaluation_to_lmtune_eval(tiny, tmp_path, capsys, monkeypatch):
    from lmtune.distributed import DATA_CACHE

    run = RunDir(tmp_path / "run")
    (run.root / DATA_CACHE).mkdir(parents=True)
    cfg = _cfg(tiny, run.root, "distributed.backend=fsdp", "eval.after_train=true")
    _launched(monkeypatch, 1)
    lt._finish_on_main(cfg, run, _small_setup(tiny), _SaveTrainer(), _METRICS, quiet=False)
    assert capsys.readouterr().out == "" and (run.root / DATA_CACHE).is_dir()    # rank 1: nothing
    _launched(monkeypatch, 0)
    lt._finish_on_main(cfg, run, _small_setup(tiny), _SaveTrainer(), _METRICS, quiet=False)
    out = capsys.readouterr().out
    assert out.startswith(f"note: fsdp shards the weights: run `lmtune eval {run.root}` for eval.json\n\ntrainable")
    assert out.endswith(f"artifacts: {run.root}/adapter/ (weights), metrics.jsonl, tensorboard/\n")  # no eval.json
    assert not (run.root / DATA_CACHE).exists()           # rank 0 drops the data cache
    assert cfg.eval.after_train is True                    # the caller's config is left alone
    # nothing to evaluate after training: no note
    cfg = _cfg(tiny, run.root, "distributed.backend=fsdp")
    lt._finish_on_main(cfg, run, _small_setup(tiny), _SaveTrainer(), _METRICS, quiet=True)
    assert capsys.readouterr().out == ""


# ---------------------------------------------------------------- setup -> save -> finish, no training

def test_setup_save_and_finish_around_an_untrained_adapter(tiny, tmp_path, capsys):
    """Everything `train` does but the optimizer steps: what _setup returns and writes, the final
    save on rank 0 (validation loss measured once, reused by eval.json), the after-train evaluation,
    the card that shows it, the report and the closing lines."""
    from peft import PeftModel

    from lmtune.artifacts import model_card, portable_base
    from lmtune.data.prepare import summary_line
    from lmtune.evaluate.summary import summarize
    from lmtune.packed_attention import NAME

    root = tmp_path / "run"
    cfg = _cfg(tiny, root, "train.learning_rate=auto", "train.epochs=auto", "train.batch_size=null",
               "eval.after_train=true", "output.report=true", "eval.num_samples=1", "eval.max_new_tokens=2",
               "eval.forgetting_check=false")
    run = RunDir(root)
    s = lt._setup(cfg, run, resume=False)
    out, err = capsys.readouterr()
    assert "8 packed rows / 1 per step" in out                                 # auto values for the CPU
    from lmtune.distributed import usable_cores

    if usable_cores() > 1 and torch.get_num_threads() == 1:                   # conftest: one thread
        assert "note: CPU training runs one thread per process; --nproc" in err
    assert (s.precision, s.device.kind, s.trainable, s.total) == ("fp32", "cpu", 16384, 39072)
    assert isinstance(s.model, PeftModel) and s.model.peft_config["default"].base_model_name_or_path == \
        portable_base(str(tiny.model))
    assert not any("4bit" in type(m).__name__ for m in s.model.modules())      # lora: not quantized
    assert s.model.config._attn_implementation == NAME                         # packed rows on CPU
    assert (len(s.data.train), len(s.data.validation), len(s.data.test_examples)) == (8, 2, 2)
    assert s.template is s.data.template and s.tokenizer.pad_token is not None
    assert (cfg.train.learning_rate, cfg.train.epochs) == (0.0033, 41.0)     # auto resolved in place
    assert (root / "config.yaml").read_text() == cfg.to_yaml()
    assert json.loads((root / "data_stats.json").read_text()) == s.data.stats
    assert json.loads((root / "template.json").read_text()) == s.template.to_dict()
    assert summary_line(s.data.stats) + "\n" in err and (root / "heldout_test.jsonl").is_file()
    trainer = lt._build_trainer(cfg, run, s)
    metrics, val = lt._save(cfg, run, s, trainer, 3.14159)
    assert (metrics["eval_loss"], metrics["eval_perplexity"]) == (val.loss, val.perplexity)
    assert (metrics["global_step"], metrics["epochs"], metrics["train_seconds"]) == (0, 0.0, 3.14)
    assert metrics["stop_at"] == {"max_steps": 2}
    assert json.loads((root / "train_summary.json").read_text()) == metrics
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "lmtune_template.json",
            "README.md"} <= {p.name for p in (root / "adapter").iterdir()}
    capsys.readouterr()
    lt._finish_on_main(cfg, run, s, trainer, metrics, False, val)
    out = capsys.readouterr().out
    evaluation = json.loads((root / "eval.json").read_text())
    assert evaluation["validation"]["source"] == "validation split"
    assert evaluation["validation"]["tuned"]["loss"] == pytest.approx(val.loss)
    assert evaluation["task"]["tuned"] and (root / "report.html").is_file()
    assert (root / "adapter" / "README.md").read_text() == model_card("adapter", cfg, 0, 0.0, metrics, evaluation)
    assert "[eval] generating 1 answers (tuned)" in out and summarize(evaluation) + "\n" in out
    assert "trainable params: 16,384 (41.93% of the base model's 39,072" in out
    assert out.endswith(f"artifacts: {root}/adapter/ (weights), eval.json, metrics.jsonl, tensorboard/, "
                        "report.html\n")


def test_setup_of_a_resumed_run_keeps_its_checkpoints(tiny, tmp_path):
    """--resume checks the run as a resume and never recreates it, even with output.overwrite on."""
    root = tmp_path / "run"
    for overwrite in ("false", "true"):
        cfg = _cfg(tiny, root, f"output.overwrite={overwrite}")
        RunDir(root).create(overwrite=False)
        (root / "config.yaml").write_text(cfg.to_yaml())
        ckpt = root / "checkpoints" / "checkpoint-1"
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "trainer_state.json").write_text("{}")
        s = lt._setup(cfg, RunDir(root), resume=True)
        assert (ckpt / "trainer_state.json").is_file() and s.trainable == 16384


def test_setup_loads_a_4bit_base_for_qlora(tiny, tmp_path):
    import bitsandbytes as bnb

    s = lt._setup(_cfg(tiny, tmp_path / "run", "method=qlora"), RunDir(tmp_path / "run"), resume=False)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in s.model.modules())
