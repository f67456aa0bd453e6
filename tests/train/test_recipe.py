"""lmtune/train/recipe.py called function by function, each decision pinned by literal values: the
config -> SFTConfig mapping, the optimizer choice, preflight's refusals (a resumed run's included),
the CPU process hint, the data preparation per rank, the auto values and the run inputs; then what
reaches the trainer, the resume point and the non-finite stop in fit, the final save on each rank
and engine, the closing lines, and setup -> save -> after-train evaluation around an untrained
adapter. Trainer stand-ins appear only where one CPU process cannot take the branch (another rank,
FSDP/DeepSpeed). `train` itself end to end: test_recipe_train.py; setup on particular bases:
test_recipe_setup.py."""

from __future__ import annotations

import json
import math
import os
import resource
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import lmtune.train.recipe as lt
from lmtune.config import load_config
from lmtune.errors import ConfigError, UserError
from lmtune.run.layout import RunDir
from lmtune.train import arguments
from lmtune.train.callbacks import MarkCheckpointComplete, NonFiniteGuard
from tiny_models import tiny_run_inputs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_run_inputs(tmp_path_factory.mktemp("tiny"))


def _cfg(tiny, out, *extra):
    return load_config(None, [f"model.name_or_path={tiny.model}", f"data.train={tiny.data}", f"output.dir={out}",
                              "data.val_split=0.25", "data.max_length=64", "train.max_steps=2", "train.epochs=1",
                              "train.batch_size=2", "train.grad_accum=1", "train.learning_rate=5e-3",
                              "train.logging_steps=1", "train.save_steps=1", "train.load_best=false",
                              "train.warmup_ratio=0", "output.report=false", "eval.after_train=false", *extra])


def _launched(monkeypatch, rank: int, world: int = 2):
    """The environment torchrun gives a worker (lmtune/train/distributed.py reads only these)."""
    for name, value in (("LOCAL_RANK", rank), ("RANK", rank), ("WORLD_SIZE", world)):
        monkeypatch.setenv(name, str(value))


# ---------------------------------------------------------------- config -> SFTConfig

_EVERY = ["data.task=sql", "train.epochs=2", "train.max_steps=11", "train.learning_rate=3e-4",
          "train.batch_size=5", "train.eval_batch_size=6", "train.grad_accum=7", "train.warmup_steps=1",
          "train.warmup_ratio=0.3", "train.scheduler=constant", "train.weight_decay=0.05",
          "train.max_grad_norm=0.7", "train.gradient_checkpointing=true", "train.logging_steps=9",
          "train.eval_steps=10", "train.save_steps=20", "train.save_total_limit=3", "train.seed=123",
          "data.max_length=77", "data.packing=false", "data.train_on_prompt=true", "train.load_best=true"]


def test_every_setting_reaches_the_sft_config_literally(tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    cfg = load_config(None, [*_EVERY, f"output.dir={tmp_path / 'run'}"])
    run = RunDir(cfg.output.dir)
    a = lt.training_arguments(cfg, run, "fp32", "cpu", has_eval=True)
    assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path / "run" / "tensorboard")
    assert a.output_dir == str(tmp_path / "run" / "checkpoints")
    assert (a.num_train_epochs, a.max_steps, a.learning_rate) == (2, 11, 3e-4)   # none of them SFTConfig's default
    assert (a.per_device_train_batch_size, a.per_device_eval_batch_size, a.gradient_accumulation_steps) == (5, 6, 7)
    assert a.warmup_steps == 1                       # steps > 0 win over the ratio
    assert (a.lr_scheduler_type.value, a.weight_decay, a.max_grad_norm) == ("constant", 0.05, 0.7)
    assert a.optim.value == "adamw_torch"
    assert (a.bf16, a.fp16, a.use_cpu) == (False, False, True)
    assert a.activation_checkpointing is True and a.activation_checkpointing_kwargs == {"use_reentrant": False}
    assert (a.logging_steps, a.logging_first_step) == (9, True)
    assert (a.eval_strategy.value, a.eval_steps, a.save_strategy.value, a.save_steps) == ("steps", 10, "steps", 20)
    assert (a.save_total_limit, a.load_best_model_at_end) == (3, True)
    assert (a.metric_for_best_model, a.greater_is_better) == ("eval_loss", False)
    assert (a.seed, a.data_seed, a.report_to) == (123, 123, ["tensorboard"])
    assert (a.max_length, a.packing, a.packing_strategy, a.completion_only_loss) == (77, False, "bfd", False)
    assert (a.dataset_num_proc, a.dataloader_num_workers, a.remove_unused_columns, a.disable_tqdm) == \
        (None, 0, True, False)


def test_defaults_ratio_precision_and_no_evaluation(tmp_path):
    cfg = load_config(None, ["data.task=sql", f"output.dir={tmp_path / 'run'}", "train.learning_rate=1e-3",
                             "train.epochs=2", "train.warmup_steps=0", "train.warmup_ratio=0.25"])
    run = RunDir(cfg.output.dir)
    a = lt.training_arguments(cfg, run, "bf16", "cpu", has_eval=False)
    assert a.warmup_steps == 0.25                    # no steps: the ratio (transformers 5 takes it here)
    assert (a.bf16, a.fp16) == (True, False)
    assert a.per_device_train_batch_size == 1        # batch_size None: one row on CPU
    assert a.activation_checkpointing is False and a.activation_checkpointing_kwargs is None
    assert (a.eval_strategy.value, a.save_strategy.value) == ("no", "epoch")
    assert a.load_best_model_at_end is False         # load_best is on, but nothing is evaluated
    assert (a.max_length, a.packing, a.completion_only_loss) == (cfg.data.max_length, True, True)
    a = lt.training_arguments(cfg, run, "fp32", "cuda", has_eval=True)
    assert (a.bf16, a.fp16, a.use_cpu, a.per_device_train_batch_size) == (False, False, False, 4)
    assert a.optim.value == "adamw_torch_fused"
    assert (a.eval_strategy.value, a.save_strategy.value, a.load_best_model_at_end) == ("epoch", "epoch", True)


def test_fp16_and_a_step_count_set_alone_without_best_model(tmp_path):
    cfg = load_config(None, ["data.task=sql", f"output.dir={tmp_path / 'run'}", "train.learning_rate=1e-3",
                             "train.epochs=1", "train.load_best=false", "train.eval_steps=4"])
    a = lt.training_arguments(cfg, RunDir(cfg.output.dir), "fp16", "cuda", has_eval=True)
    assert (a.bf16, a.fp16) == (False, True)
    # without load_best the counts stay apart: evaluate every 4 steps, save once per epoch
    assert (a.eval_strategy.value, a.eval_steps, a.save_strategy.value) == ("steps", 4, "epoch")
    cfg = load_config(None, ["data.task=sql", f"output.dir={tmp_path / 'run'}", "train.learning_rate=1e-3",
                             "train.epochs=1", "train.save_steps=6"])
    a = lt.training_arguments(cfg, RunDir(cfg.output.dir), "fp32", "cpu", has_eval=False)
    assert (a.eval_strategy.value, a.save_strategy.value, a.save_steps) == ("no", "steps", 6)


def test_distributed_fields_come_from_lmtune_distributed(tmp_path, monkeypatch):
    cfg = load_config(None, ["data.task=sql", f"output.dir={tmp_path / 'run'}", "train.learning_rate=1e-3",
                             "train.epochs=1", "distributed.backend=ddp"])
    assert arguments.distributed_arguments(cfg, "cpu") == {}          # one process: nothing
    _launched(monkeypatch, 0)
    got = arguments.distributed_arguments(cfg, "cpu")
    assert got["ddp_backend"] == "gloo" and got["ddp_find_unused_parameters"] is False
    assert "ddp_backend" not in arguments.distributed_arguments(cfg, "cuda")
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE"):   # SFTConfig would join a process group
        monkeypatch.delenv(name)
    seen = []
    monkeypatch.setattr(arguments, "distributed_arguments", lambda c, kind: seen.append((c, kind)) or {"ddp_timeout": 77})
    a = lt.training_arguments(cfg, RunDir(cfg.output.dir), "fp32", "cpu", has_eval=False)
    assert a.ddp_timeout == 77 and seen == [(cfg, "cpu")]


@pytest.mark.parametrize("method, optimizer, device, expected, note", [
    ("lora", "auto", "cpu", "adamw_torch", ""),
    ("full", "auto", "cpu", "adamw_torch", ""),
    ("lora", "auto", "cuda", "adamw_torch_fused", ""),
    ("qlora", "auto", "cuda", "paged_adamw_8bit", ""),
    ("qlora", "auto", "cpu", "adamw_torch",
     "note: qlora on CPU trains with adamw_torch (32-bit); paged_adamw_8bit needs CUDA\n"),
    ("lora", "paged_adamw_32bit", "cpu", "paged_adamw_32bit",
     "note: paged_adamw_32bit pages optimizer state only on CUDA; on CPU bitsandbytes runs it unpaged\n"),
    ("qlora", "paged_adamw_8bit", "cuda", "paged_adamw_8bit", ""),
    ("qlora", "sgd", "cpu", "sgd", ""),
])
def test_optimizer_choice_and_its_notes(capsys, method, optimizer, device, expected, note):
    cfg = load_config(None, ["data.task=sql", f"method={method}", f"train.optimizer={optimizer}"])
    assert arguments.choose_optimizer(cfg, device) == expected
    out = capsys.readouterr()
    assert (out.err, out.out) == (note, "")


# ---------------------------------------------------------------- preflight

@pytest.mark.parametrize("eval_steps, save_steps, fix", [(4, 6, 4), (4, 10, 8), (4, 3, 4)])
def test_preflight_refuses_saves_between_evaluations_with_load_best(tiny, tmp_path, eval_steps, save_steps, fix):
    cfg = _cfg(tiny, tmp_path / "run", "train.load_best=true", f"train.eval_steps={eval_steps}",
               f"train.save_steps={save_steps}")
    with pytest.raises(ConfigError) as err:
        lt.preflight(cfg, RunDir(cfg.output.dir), resume=False)
    assert err.value.args[0] == (f"train.save_steps: {save_steps} must be a multiple of train.eval_steps "
                                 f"({eval_steps}) when train.load_best is on")
    assert err.value.problems == [f"set train.save_steps={fix}, or train.load_best=false"]
    assert not (tmp_path / "run").exists()          # preflight creates nothing


@pytest.mark.parametrize("extra", [
    ["train.load_best=true", "train.eval_steps=4", "train.save_steps=8"],   # a multiple
    ["train.load_best=false", "train.eval_steps=4", "train.save_steps=6"],  # no best model to keep
    ["train.load_best=true", "train.save_steps=6"],                          # one count serves both
    ["train.load_best=true", "train.eval_steps=6", "train.save_steps=null"],
])
def test_preflight_accepts_counts_the_trainer_can_keep_the_best_with(tiny, tmp_path, extra):
    cfg = _cfg(tiny, tmp_path / "run", *extra)
    assert lt.preflight(cfg, RunDir(cfg.output.dir), resume=False) == str(tiny.model)
    assert not (tmp_path / "run").exists()


def test_preflight_checks_model_length_targets_and_test_files(tiny, tmp_path):
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="model.name_or_path: .*does not exist"):
        lt.preflight(_cfg(SimpleNamespace(model=tmp_path / "none", data=tiny.data), run), RunDir(run), False)
    with pytest.raises(ConfigError, match="data.max_length: 600 is longer than the model's 512 positions"):
        lt.preflight(_cfg(tiny, run, "data.max_length=600"), RunDir(run), False)
    with pytest.raises(UserError, match="test data"):
        lt.preflight(_cfg(tiny, run, f"data.test={tmp_path / 'missing.jsonl'}"), RunDir(run), False)
    for method in ("lora", "qlora"):
        with pytest.raises(ConfigError, match="lora.target_modules"):
            lt.preflight(_cfg(tiny, run, f"method={method}", "lora.target_modules=[nope_proj]"), RunDir(run), False)
    # full fine-tuning has no LoRA targets to check
    assert lt.preflight(_cfg(tiny, run, "method=full", "lora.target_modules=[nope_proj]"), RunDir(run), False)
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="is not empty"):
        lt.preflight(_cfg(tiny, run), RunDir(run), False)


def test_preflight_overwrites_only_a_run_that_holds_none_of_its_inputs(tiny, tmp_path):
    run = tmp_path / "run"
    RunDir(run).create(overwrite=False)                   # an earlier lmtune run
    (run / "train_summary.json").write_text("{}")
    cfg = _cfg(tiny, run, "output.overwrite=true")
    assert lt.preflight(cfg, RunDir(run), resume=False) == str(tiny.model)
    assert (run / "train_summary.json").is_file()          # checked, not yet replaced
    inside = run / "mine.jsonl"                           # the training data lives in the run
    inside.write_text(Path(tiny.data).read_text())
    with pytest.raises(ConfigError, match="mine.jsonl, an input of this command"):
        lt.preflight(_cfg(SimpleNamespace(model=tiny.model, data=inside), run, "output.overwrite=true"),
                     RunDir(run), resume=False)


def test_preflight_checks_qlora_support_only_for_qlora(tiny, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)   # as if not installed
    run = tmp_path / "run"
    with pytest.raises(UserError, match="method qlora needs bitsandbytes"):
        lt.preflight(_cfg(tiny, run, "method=qlora"), RunDir(run), False)
    assert lt.preflight(_cfg(tiny, run, "method=lora"), RunDir(run), False) == str(tiny.model)


def test_preflight_on_resume_compares_the_saved_config_and_the_checkpoint_steps(tiny, tmp_path):
    run = tmp_path / "run"
    cfg = _cfg(tiny, run)
    with pytest.raises(ConfigError, match="--resume: run directory .* does not exist"):
        lt.preflight(cfg, RunDir(run), resume=True)
    run.mkdir()
    assert lt.preflight(cfg, RunDir(run), resume=True) == str(tiny.model)     # no config.yaml yet
    (run / "config.yaml").write_text(_cfg(tiny, run, "lora.r=4").to_yaml())
    with pytest.raises(ConfigError) as err:
        lt.preflight(cfg, RunDir(run), resume=True)
    assert err.value.args[0] == (f"--resume: this config differs from {run / 'config.yaml'} in what the "
                                 "checkpoints depend on")
    assert any("lora.r" in p for p in err.value.problems)
    assert err.value.problems[-1] == (f"resume with the run's own config (lmtune train {run / 'config.yaml'} "
                                      "--resume), or start a new run in another output.dir")
    assert len(err.value.problems) >= 2
    # not resuming: the same directory is refused as not empty instead, never compared
    with pytest.raises(ConfigError, match="is not empty"):
        lt.preflight(cfg, RunDir(run), resume=False)
    (run / "config.yaml").write_text(cfg.to_yaml())
    ckpt = run / "checkpoints" / "checkpoint-5"
    ckpt.mkdir(parents=True)
    from lmtune.train.callbacks import MarkCheckpointComplete as Mark

    Mark().on_save(SimpleNamespace(output_dir=str(run / "checkpoints")),
                   SimpleNamespace(global_step=5, is_world_process_zero=True), None, model=None)
    with pytest.raises(ConfigError, match="every complete checkpoint is past train.max_steps=2"):
        lt.preflight(cfg, RunDir(run), resume=True)
    assert lt.preflight(_cfg(tiny, run, "train.max_steps=5"), RunDir(run), resume=True) == str(tiny.model)


# ---------------------------------------------------------------- setup helpers

def test_cpu_hint_names_the_processes_and_grad_accum(capsys, monkeypatch):
    import lmtune.train.distributed as dist

    monkeypatch.setattr(dist, "usable_cores", lambda: 4)
    lt._suggest_processes(load_config(None, ["data.task=sql", "train.grad_accum=8"]), "cpu", threads=1)
    assert capsys.readouterr().err == ("note: CPU training runs one thread per process; --nproc 4 "
                                       "train.grad_accum=2 uses all 4 cores with the same rows per optimizer step\n")
    lt._suggest_processes(load_config(None, ["data.task=sql", "train.grad_accum=6"]), "cpu", threads=1)
    assert capsys.readouterr().err == ("note: CPU training runs one thread per process; --nproc 4 (and "
                                       "train.grad_accum divided by 4) uses all 4 cores with the same rows per "
                                       "optimizer step\n")
    lt._suggest_processes(load_config(None, ["data.task=sql", "train.rows_per_step=8"]), "cpu", threads=1)
    assert capsys.readouterr().err == ("note: CPU training runs one thread per process; --nproc auto uses all 4 "
                                       "cores with the same rows per optimizer step\n")
    quiet = [("cuda", 1, []), ("cpu", 2, []), ("cpu", 1, ["train.threads=1"])]
    for device, threads, extra in quiet:
        lt._suggest_processes(load_config(None, ["data.task=sql", *extra]), device, threads)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(dist, "usable_cores", lambda: 2)
    lt._suggest_processes(load_config(None, ["data.task=sql"]), "cpu", threads=1)
    assert "--nproc 2 train.grad_accum=2 uses all 2 cores" in capsys.readouterr().err
    monkeypatch.setattr(dist, "usable_cores", lambda: 1)
    lt._suggest_processes(load_config(None, ["data.task=sql"]), "cpu", threads=1)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(dist, "usable_cores", lambda: 4)
    _launched(monkeypatch, 0)                        # already one of several processes
    lt._suggest_processes(load_config(None, ["data.task=sql"]), "cpu", threads=1)
    assert capsys.readouterr().err == ""


def test_seed_fixes_the_initialisation_before_the_trainer_starts():
    lt._seed(7)
    first = torch.rand(4)
    lt._seed(7)
    assert torch.equal(torch.rand(4), first)
    torch.manual_seed(7)
    assert torch.equal(torch.rand(4), first)


def test_adapters_go_back_to_fp32_and_nothing_else_moves():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].to(torch.bfloat16)                       # a trainable adapter TRL cast to bf16
    model[1].to(torch.bfloat16).requires_grad_(False)  # a frozen bf16 base weight
    model[2].to(torch.float16)                        # trainable fp16: not TRL's cast, left alone
    lt._adapters_to_fp32(model)
    assert [p.dtype for p in model.parameters()] == [torch.float32] * 2 + [torch.bfloat16] * 2 + [torch.float16] * 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the peak is the allocator's")
def test_peak_memory_is_this_process_peak_rss_in_mb():
    before = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    got = lt._peak_memory_mb()
    after = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    assert before <= got <= after and got > 10


# ---------------------------------------------------------------- data, auto values, run files

def _tokenizer(tiny):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny.model))


def _model(tiny):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(tiny.model))


def test_data_is_prepared_before_the_run_directory_exists_and_resume_creates_none(tiny, tmp_path):
    cfg = _cfg(tiny, tmp_path / "run")
    data = lt._prepare_data(cfg, RunDir(cfg.output.dir), _tokenizer(tiny), resume=True)
    assert (len(data.train), len(data.validation)) == (8, 2) and not (tmp_path / "run").exists()
    lt._prepare_data(cfg, RunDir(cfg.output.dir), _tokenizer(tiny), resume=False)
    assert (tmp_path / "run" / "lmtune_output.json").is_file()
    (tmp_path / "run" / "old.txt").write_text("an earlier run's file")
    again = _cfg(tiny, tmp_path / "run", "output.overwrite=true")
    lt._prepare_data(again, RunDir(again.output.dir), _tokenizer(tiny), resume=False)
    assert not (tmp_path / "run" / "old.txt").exists()      # overwrite: the earlier run is replaced
    bad = _cfg(SimpleNamespace(model=tiny.model, data=tmp_path / "bad.jsonl"), tmp_path / "run2")
    (tmp_path / "bad.jsonl").write_text("not json\n")
    with pytest.raises(UserError):
        lt._prepare_data(bad, RunDir(bad.output.dir), _tokenizer(tiny), resume=False)
    assert not (tmp_path / "run2").exists()                # bad data leaves no run directory


def test_launched_ranks_share_the_data_through_the_run_directory(tiny, tmp_path, monkeypatch):
    """Two ranks of one machine, played in turn inside a real one-process gloo group: rank 0 prepares,
    creates the run and caches the tokenized data in it; rank 1 reads that cache back."""
    import torch.distributed as dist

    from lmtune.train.distributed import DATA_CACHE

    cfg = _cfg(tiny, tmp_path / "run")
    run, tok = RunDir(cfg.output.dir), _tokenizer(tiny)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        _launched(monkeypatch, 0)
        first = lt._prepare_data(cfg, run, tok, resume=False)
        assert (tmp_path / "run" / DATA_CACHE / "node0" / "train").is_dir()
        _launched(monkeypatch, 1)
        other = lt._prepare_data(cfg, run, tok, resume=False)
    finally:
        dist.destroy_process_group()
    assert other.template.tokenizer is tok and other.template.to_dict() == first.template.to_dict()
    assert other.train["input_ids"] == first.train["input_ids"] and other.stats == first.stats


def _resolved_lines(cfg, model, train, processes):
    import copy

    from lmtune.train.hparams import resolve_for_run

    lines = []
    resolve_for_run(copy.deepcopy(cfg), model, train, "cpu", processes, say=lines.append)
    return "".join(line + "\n" for line in lines)


def test_auto_values_warnings_and_the_held_out_split_on_rank_zero(tiny, tmp_path, capsys, monkeypatch):
    import dataclasses

    from lmtune.data.holdout import HELDOUT_FILE

    def cfg():
        return _cfg(tiny, tmp_path / "run", "train.learning_rate=auto", "train.epochs=auto", "train.max_steps=-1",
                    "train.batch_size=null")

    model, run = _model(tiny), RunDir(tmp_path / "run")
    data = lt._prepare_data(cfg(), run, _tokenizer(tiny), resume=False)
    data = dataclasses.replace(data, stats={**data.stats, "warnings": ["first thing"]})
    one, two = _resolved_lines(cfg(), model, data.train, 1), _resolved_lines(cfg(), model, data.train, 2)
    assert "8 packed rows / 1 per step" in one and "8 packed rows / 2 per step" in two
    capsys.readouterr()
    main = cfg()
    lt._own_data_defaults(main, run, model, data, "cpu")
    assert (main.train.learning_rate, main.train.epochs) == (0.0033, 41.0)   # resolved in place
    assert capsys.readouterr().out == one
    assert len(data.test_examples) == 2
    held = (run / HELDOUT_FILE).read_text().splitlines()
    assert len(held) == 2 and all(json.loads(line) for line in held)
    (run / HELDOUT_FILE).unlink()
    _launched(monkeypatch, 0)                          # rank 0 of 2: the step counts two processes
    lt._own_data_defaults(cfg(), run, model, data, "cpu")
    assert capsys.readouterr().out == two and (run / HELDOUT_FILE).is_file()
    (run / HELDOUT_FILE).unlink()
    _launched(monkeypatch, 1)                          # rank 1: resolves the same, silently
    other = cfg()
    lt._own_data_defaults(other, run, model, data, "cpu")
    assert (other.train.learning_rate, other.train.epochs) == (0.0033, 41.0)
    out = capsys.readouterr()
    assert (out.out, out.err) == ("", "") and not (run / HELDOUT_FILE).exists()


def test_warnings_print_on_rank_zero(tiny, tmp_path, capsys):
    cfg = _cfg(tiny, tmp_path / "run")
    data = SimpleNamespace(stats={"warnings": ["first thing", "second thing"]}, train=None, test_examples=[])
    lt._own_data_defaults(cfg, RunDir(tmp_path / "run"), None, data, "cpu")
    assert capsys.readouterr().err == "warning: first thing\nwarning: second thing\n"
    assert not (tmp_path / "run").exists()               # no test examples: no held-out file
    lt._own_data_defaults(cfg, RunDir(tmp_path / "run"), None, SimpleNamespace(stats={}, train=None), "cpu")
    assert capsys.readouterr().err == "" and not (tmp_path / "run").exists()   # no warnings, no test split


def test_run_inputs_are_rank_zeros_and_data_summary_too(tiny, tmp_path, capsys, monkeypatch):
    cfg = _cfg(tiny, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    data = lt._prepare_data(cfg, run, _tokenizer(tiny), resume=False)
    capsys.readouterr()
    _launched(monkeypatch, 1)
    lt._write_run_inputs(cfg, run, data.template, data)
    lt._say_data(data.stats)
    assert not (run / "config.yaml").exists() and capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    from lmtune.data.prepare import summary_line

    lt._say_data(data.stats)
    assert capsys.readouterr().err == summary_line(data.stats) + "\n"
    lt._write_run_inputs(cfg, run, data.template, data)
    assert (run / "config.yaml").read_text() == cfg.to_yaml()
    assert json.loads((run / "data_stats.json").read_text()) == data.stats
    assert json.loads((run / "template.json").read_text()) == data.template.to_dict()
    env = json.loads((run / "env.json").read_text())
    assert env["seed"] == 42 and env["hardware"]["python"] == sys.version.split()[0]
    # the data the run read, and its hash (env.json recorded none before: the files are in the stats)
    import hashlib

    assert env["data_files"] == [str(tiny.data)]
    assert env["data_sha256"] == hashlib.sha256(b"train.jsonl" + Path(tiny.data).read_bytes()).hexdigest()



# ---------------------------------------------------------------- what reaches the trainer

def _setup(tiny, cfg, precision="fp32"):
    """recipe.py's _Setup from the real parts (tokenizer, prepared data, a LoRA model)."""
    from lmtune.train import methods
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

    from lmtune.train.callbacks import ConsoleProgress, MetricsJsonl

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

    from lmtune.run.artifacts import model_card

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
        self.callback_handler = SimpleNamespace(callbacks=[])   # _save reads the callbacks' warnings

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
    assert metrics == {"method": "lora", "objective": "sft", "trainable_params": 1234, "total_params": 5678, "train_seconds": 1.23,
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
    from lmtune.train.distributed import DATA_CACHE

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

    from lmtune.run.artifacts import model_card, portable_base
    from lmtune.data.prepare import summary_line
    from lmtune.evaluate.summary import summarize
    from lmtune.train.packed_attention import NAME

    root = tmp_path / "run"
    cfg = _cfg(tiny, root, "train.learning_rate=auto", "train.epochs=auto", "train.batch_size=null",
               "eval.after_train=true", "output.report=true", "eval.num_samples=1", "eval.max_new_tokens=2",
               "eval.forgetting_check=false")
    run = RunDir(root)
    s = lt._setup(cfg, run, resume=False)
    out, err = capsys.readouterr()
    assert "8 packed rows / 1 per step" in out                                 # auto values for the CPU
    from lmtune.train.distributed import usable_cores

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
