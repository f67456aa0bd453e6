"""lmtune/train/recipe.py called function by function, each decision pinned by literal values: the config
-> SFTConfig mapping, the optimizer choice, preflight's refusals, the CPU process hint, the data
preparation per rank, the auto values and the run inputs. The trainer, fit, save and finish are in
test_train_save_units.py (which shares this file's fixture and helpers), one tiny `train` in
test_train_run_units.py. The mutation run of train/recipe.py uses these (scripts/mutation.sh, train/core)."""

from __future__ import annotations

import json
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
    assert lt.distributed_arguments(cfg, "cpu") == {}          # one process: nothing
    _launched(monkeypatch, 0)
    got = lt.distributed_arguments(cfg, "cpu")
    assert got["ddp_backend"] == "gloo" and got["ddp_find_unused_parameters"] is False
    assert "ddp_backend" not in lt.distributed_arguments(cfg, "cuda")
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE"):   # SFTConfig would join a process group
        monkeypatch.delenv(name)
    seen = []
    monkeypatch.setattr(lt, "distributed_arguments", lambda c, kind: seen.append((c, kind)) or {"ddp_timeout": 77})
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
    assert lt.choose_optimizer(cfg, device) == expected
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
