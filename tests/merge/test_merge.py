"""lmtune/merge.py piece by piece: the logit tolerance per dtype, the disk-space rule, which --out
paths are refused, the merged model's card, and merge() itself on a run directory built by hand
(config.yaml, adapter/, template.json, train_summary.json: what `lmtune train` leaves) and on a bare
adapter. One tiny base and adapter per module, no training. Merges after real training:
tests/train/test_reliability_runs.py and tests/train/test_critical_settings.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lmtune import merge as merge_mod
from lmtune.config import load_config
from lmtune.errors import UserError
from lmtune.merge import (_bytes_of, _check_disk, _check_logits, _check_out, _logits as merge_logits, merge,
                          model_card)
from lmtune.run.layout import OUTPUT_MARKER
from tiny_models import InputsSeen, meta_model, save_random_lora_adapter, save_tiny_model

# Imported here, not only where used: a mutation run (scripts/mutation.sh) forks every mutant's
# tests from one process that collected this module, so these heavy imports are paid once.
import bitsandbytes  # noqa: E402,F401
import peft.tuners.lora  # noqa: E402,F401
import transformers.models.llama.modeling_llama  # noqa: E402,F401
from peft import PeftModel  # noqa: E402,F401
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402,F401

TEMPLATE = {"name": "alpaca", "note": "a template as train writes it"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A base, an adapter on it (B random: the merge moves the logits), and a run directory."""
    root = tmp_path_factory.mktemp("merge")
    base = save_tiny_model(root / "base", "llama")
    adapter = save_random_lora_adapter(base, root / "adapter", seed=3, std=0.2)
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copytree(adapter, run / "adapter")
    cfg = load_config(None, [f"model.name_or_path={base}", "data.task=sql", "method=lora", "lora.r=4",
                             "lora.alpha=8", "train.learning_rate=2e-4", f"output.dir={run}"])
    (run / "config.yaml").write_text(cfg.to_yaml())
    (run / "template.json").write_text(json.dumps(TEMPLATE))
    (run / "train_summary.json").write_text(json.dumps({"global_step": 7, "epochs": 1.5, "final_train_loss": 2.25}))
    (run / "eval.json").write_text(json.dumps({
        "task": {"name": "sql", "primary": "execution_accuracy", "examples": 8,
                 "tuned": {"execution_accuracy": 0.5}, "base": {"execution_accuracy": 0.25}},
        "forgetting": {"verdict": "ok"}}))
    n_base = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(str(base)).parameters())
    return SimpleNamespace(root=root, base=base, adapter=adapter, run=run, n_base=n_base)


def _logits(path, ids):
    from transformers import AutoModelForCausalLM

    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(str(path)).eval()(input_ids=ids).logits.float()


def _peft_logits(tiny, ids):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny.base)), str(tiny.adapter)).eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


# ---------------------------------------------------------------- the pieces

def _fake_merged(dtype):
    return torch.nn.Linear(2, 2).to(dtype)


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-3), (torch.float16, 1e-2), (torch.bfloat16, 5e-2),
                                        (torch.float64, 5e-2)])
def test_logit_check_tolerance_per_dtype_relative_to_the_largest_logit(dtype, tol):
    name = str(dtype).removeprefix("torch.")
    small, large = torch.tensor([[0.5, -0.25]]), torch.tensor([[3.0, -8.0]])
    _check_logits(tol, small, _fake_merged(dtype))              # |logits| < 1: the limit is the tolerance itself
    _check_logits(tol * 8, large, _fake_merged(dtype))          # scaled by the largest |logit|, 8
    with pytest.raises(UserError) as info:
        _check_logits(tol * 1.01, small, _fake_merged(dtype))
    assert info.value.render() == (
        f"error: the merged model's logits differ from base+adapter by {tol * 1.01:.3g} (tolerance {tol:.3g} in "
        f"{name}): the merge is wrong, nothing was written\n  check that the adapter was trained on this base "
        "(adapter_config.json base_model_name_or_path) and that peft is the pinned version")
    with pytest.raises(UserError, match=f"tolerance {tol * 8:.3g} in"):
        _check_logits(tol * 8.1, large, _fake_merged(dtype))


def test_logit_check_refuses_nan():
    with pytest.raises(UserError, match="differ from base\\+adapter by nan"):
        _check_logits(float("nan"), torch.zeros(1, 2), _fake_merged(torch.float32))


def _disk(monkeypatch, free):
    seen = []

    def usage(path):
        seen.append(Path(path))
        return SimpleNamespace(total=2**40, used=0, free=free)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    return seen


def test_disk_check_needs_the_size_plus_a_tenth_plus_50_mib(tmp_path, monkeypatch):
    size = 2**30
    need = int(size * 1.1) + 50 * 2**20
    seen = _disk(monkeypatch, need)
    _check_disk(tmp_path / "a" / "b" / "out", size)  # parents that do not exist yet: the nearest existing one
    assert seen == [tmp_path]
    _disk(monkeypatch, need - 1)
    with pytest.raises(UserError) as info:
        _check_disk(tmp_path / "out", size)
    assert info.value.render() == (f"error: not enough disk space for the merged model under {tmp_path}: "
                                   f"{(need - 1) / 2**30:.2f} GiB free, about {need / 2**30:.2f} GiB needed\n"
                                   "  free some space or pass --out on another disk")


def test_disk_check_of_a_relative_path_looks_at_its_absolute_parent(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seen = _disk(monkeypatch, 2**40)
    _check_disk(Path("out"), 1)
    assert seen == [tmp_path]


def test_bytes_of_counts_elements_times_the_dtype_size():
    shapes = {"a": [3, 4], "b": [5]}
    assert [_bytes_of(shapes, d) for d in ("fp32", "bf16", "fp16")] == [68, 34, 34]


def _loaded(tmp_path, base=None):
    (tmp_path / "run" / "adapter").mkdir(parents=True, exist_ok=True)
    return SimpleNamespace(adapter_dir=tmp_path / "run" / "adapter", base_ref=str(base or "org/hub-model"))


def _out_error(out, run, loaded, overwrite=False):
    with pytest.raises(UserError) as info:
        _check_out(out, run, loaded, overwrite)
    return info.value.render()


def test_check_out_accepts_a_new_directory_even_inside_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loaded = _loaded(tmp_path)
    _check_out(tmp_path / "merged", tmp_path / "run", loaded, False)
    _check_out(tmp_path / "run" / "merged", tmp_path / "run", loaded, False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_check_out_refuses_what_the_merge_reads(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loaded, run = _loaded(tmp_path), tmp_path / "run"
    fix = "\n  write the merged model elsewhere, e.g. --out merged/ or a new folder inside the run"
    assert _out_error(run, run, loaded, True) == f"error: --out {run} would replace {run}, which the merge reads{fix}"
    assert _out_error(run / "adapter", run, loaded, True) == (
        f"error: --out {run / 'adapter'} would replace {run / 'adapter'}, which the merge reads{fix}")
    assert _out_error(run / "adapter" / "m", run, loaded) == (
        f"error: --out {run / 'adapter' / 'm'} would replace {run / 'adapter'}, which the merge reads{fix}")
    assert _out_error(tmp_path, run, loaded, True) == f"error: --out {tmp_path} would replace {run}, which the merge reads{fix}"
    # a bare adapter directory: --out inside it replaces nothing of a run, but the adapter is read
    adapter = _loaded(tmp_path / "bare").adapter_dir
    loaded = SimpleNamespace(adapter_dir=adapter, base_ref="org/hub-model")
    assert "which the merge reads" in _out_error(adapter / "m", adapter, loaded)
    (tmp_path / "file").write_text("x")
    assert _out_error(tmp_path / "file", run, _loaded(tmp_path)) == (
        f"error: --out {tmp_path / 'file'} exists and is not a directory\n  choose a directory path for --out")
    (tmp_path / "to-file").symlink_to(tmp_path / "file")  # a link is refused as a link, whatever it points to
    assert f"--out {tmp_path / 'to-file'} is a symlink" in _out_error(tmp_path / "to-file", run, _loaded(tmp_path))


def test_check_out_passes_the_inputs_on_to_the_output_dir_rules(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "base"
    (base / "sub").mkdir(parents=True)
    (base / OUTPUT_MARKER).write_text(json.dumps({"written_by": "lmtune"}))
    loaded, run = _loaded(tmp_path, base), tmp_path / "run"
    assert f"--out: {base} holds {base}, an input" in _out_error(base, run, loaded, True)
    assert f"--out {base} is not empty\n  choose another directory or pass --overwrite" in _out_error(base, run, loaded)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert "is the current directory" in _out_error(Path("."), run, loaded, True)
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere")
    assert "is a symlink" in _out_error(tmp_path / "link", run, loaded)


def test_merged_card_of_a_bare_adapter(tmp_path):
    loaded = SimpleNamespace(config=None, base_ref="/models/base")
    assert model_card(loaded, 1.25e-7, None, str(tmp_path)) == "\n".join([
        "---", "library_name: transformers", "tags: [lmtune, merged]", "---", "", "# lmtune merged model", "",
        "Base model: `/models/base`", "", "## Merge check", "",
        "Max |logit difference| merged vs base+adapter: 1.25e-07", "",
        "Load it with plain transformers: `AutoModelForCausalLM.from_pretrained(<this dir>)`.", ""])
    card = model_card(loaded, 0.0, 0.0625, str(tmp_path))
    assert ("Max |logit difference| merged vs 4-bit base+adapter: 0.0625 (the merge uses the dequantized base; "
            "see lmtune docs on QLoRA merging)\n\nLoad it") in card


def test_merged_card_of_a_run_says_what_ran(tiny):
    from lmtune.inference_loading import open_path

    loaded = open_path(str(tiny.run))
    card = model_card(loaded, 2e-7, None, str(tiny.run))
    assert "# lmtune merged model" in card and "tags: [lmtune, lora, merged]" in card
    assert "- training run: 7 optimizer steps, 1.5 epochs (what ran" in card
    assert "## Merge check\n\nMax |logit difference| merged vs base+adapter: 2e-07\n" in card
    assert ("## Metrics\n\n- final_train_loss: 2.25\n- sql execution_accuracy: 0.5 tuned vs 0.25 base "
            "(8 test examples)\n- forgetting check: ok\n") in card  # train_summary.json and eval.json
    (tiny.root / "norun").mkdir(exist_ok=True)
    shutil.copy(tiny.run / "config.yaml", tiny.root / "norun" / "config.yaml")
    assert "- training run: 0 optimizer steps (what ran" in model_card(loaded, 2e-7, None, str(tiny.root / "norun"))


# ---------------------------------------------------------------- merge()

def test_merge_of_a_run_writes_the_whole_merged_model(tiny, tmp_path):
    ids = torch.tensor([[5, 17, 42, 99, 3, 250]])
    res = merge(str(tiny.run), str(tmp_path / "merged"))
    out = tmp_path / "merged"
    assert res.out_dir == out and res.max_logit_diff_4bit is None
    assert 0 < res.max_logit_diff < 1e-5  # float rounding only
    assert res.size_bytes == tiny.n_base * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["merged"]  # no staging left
    assert {"model.safetensors", "config.json", "tokenizer.json", "README.md", OUTPUT_MARKER,
            "lmtune_template.json"} <= {p.name for p in out.iterdir()}
    assert not list(out.glob("adapter_*"))
    assert json.loads((out / "lmtune_template.json").read_text()) == TEMPLATE
    assert json.loads((out / OUTPUT_MARKER).read_text())["kind"] == "merged"
    card = (out / "README.md").read_text()
    assert "7 optimizer steps, 1.5 epochs" in card and f"merged vs base+adapter: {res.max_logit_diff:.3g}" in card
    merged, with_adapter, plain = _logits(out, ids), _peft_logits(tiny, ids), _logits(tiny.base, ids)
    assert (merged - with_adapter).abs().max() < 1e-5
    assert (merged - plain).abs().max() > 1e-2  # the adapter is in it, not dropped
    from transformers import AutoModelForCausalLM

    assert {p.dtype for p in AutoModelForCausalLM.from_pretrained(str(out), dtype="auto").parameters()} == {torch.float32}


def test_the_logit_check_sends_the_probe_to_the_models_device(tiny):
    from transformers import AutoConfig

    with pytest.raises(InputsSeen) as seen:
        merge_logits(meta_model(AutoConfig.from_pretrained(str(tiny.base))), torch.tensor([[1, 2, 3]]))
    assert seen.value.args[0] == {"input_ids": torch.device("meta")}


@pytest.mark.parametrize("dtype, torch_dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_merge_saves_in_the_dtype_asked_for(tiny, tmp_path, dtype, torch_dtype):
    from transformers import AutoModelForCausalLM

    res = merge(str(tiny.adapter), str(tmp_path / "m"), dtype=dtype)
    assert res.size_bytes == tiny.n_base * 2
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"), dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch_dtype}


def test_merge_of_a_bare_adapter_replaces_a_stale_staging_dir(tiny, tmp_path):
    staging = tmp_path / ".m.staging"
    staging.mkdir()
    (staging / "junk.bin").write_text("left by a killed merge")
    res = merge(str(tiny.adapter), str(tmp_path / "deep" / "m"))  # --out under a directory not there yet
    assert res.out_dir.is_dir() and not (tmp_path / "deep" / ".m.staging").exists()
    res = merge(str(tiny.adapter), str(tmp_path / "m"))
    assert not staging.exists() and not (tmp_path / "m" / "junk.bin").exists()
    assert not (tmp_path / "m" / "lmtune_template.json").exists()  # a bare adapter has no template
    card = (tmp_path / "m" / "README.md").read_text()
    assert f"Base model: `{tiny.base}`" in card


def test_merge_overwrite_replaces_its_own_output(tiny, tmp_path):
    merge(str(tiny.adapter), str(tmp_path / "m"))
    with pytest.raises(UserError, match="is not empty"):
        merge(str(tiny.adapter), str(tmp_path / "m"))
    (tmp_path / "m" / "extra.txt").write_text("x")
    merge(str(tiny.adapter), str(tmp_path / "m"), overwrite=True)
    assert not (tmp_path / "m" / "extra.txt").exists()


def test_merge_checks_disk_space_for_the_base_before_loading_anything(tiny, tmp_path, monkeypatch):
    import lmtune.inference_loading as il

    loads = []
    real = il.load_for_inference
    monkeypatch.setattr(il, "load_for_inference", lambda *a, **k: loads.append(a) or real(*a, **k))
    _disk(monkeypatch, 2**20)
    with pytest.raises(UserError, match="not enough disk space") as info:
        merge(str(tiny.run), str(tmp_path / "m"), dtype="bf16")
    need = int(tiny.n_base * 2 * 1.1) + 50 * 2**20
    assert f"about {need / 2**30:.2f} GiB needed" in str(info.value)
    assert loads == [] and list(tmp_path.iterdir()) == []


def test_merge_checks_disk_space_again_for_the_merged_model(tiny, tmp_path, monkeypatch):
    """The merged size is checked again before writing (a Hub base could not be measured before
    loading): enough space at the first look, too little at the second, nothing written."""
    seen = []

    def usage(path):
        seen.append(path)
        return SimpleNamespace(total=2**40, used=0, free=2**40 if len(seen) == 1 else 2**20)

    monkeypatch.setattr(shutil, "disk_usage", usage)
    with pytest.raises(UserError, match="not enough disk space"):
        merge(str(tiny.adapter), str(tmp_path / "m"))
    assert len(seen) == 2 and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("allow", [False, True])
def test_merge_reads_a_pickle_adapter_only_when_the_run_allows_it(tiny, tmp_path, allow):
    import yaml
    from safetensors.torch import load_file

    run = tmp_path / "run"
    shutil.copytree(tiny.run, run)
    weights = run / "adapter" / "adapter_model.safetensors"
    torch.save(load_file(str(weights)), run / "adapter" / "adapter_model.bin")
    weights.unlink()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["model"]["allow_pickle"] = allow
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    if allow:
        assert merge(str(run), str(tmp_path / "m")).max_logit_diff < 1e-5
    else:
        with pytest.raises(UserError, match="the adapter has only pickle weights"):
            merge(str(run), str(tmp_path / "m"))


def test_merge_refuses_missing_paths_and_runs_without_an_adapter(tiny, tmp_path):
    with pytest.raises(UserError) as info:
        merge(str(tmp_path / "nope"), str(tmp_path / "m"))
    assert info.value.render() == (f"error: {tmp_path / 'nope'}: no such run or adapter directory\n  give the run "
                                   "directory `lmtune train` wrote (its output.dir) or an adapter directory")
    with pytest.raises(UserError) as info:
        merge(str(tiny.base), str(tmp_path / "m"))
    assert info.value.render() == (f"error: {tiny.base}: has no adapter to merge (full fine-tuning already saved a "
                                   "whole model)\n  use the run's model/ directory directly")
    assert list(tmp_path.iterdir()) == []


def test_merge_refuses_non_finite_weights_and_passes_other_errors_on(tiny, tmp_path, monkeypatch):
    from peft.tuners.lora import LoraModel

    def broken(self, *a, **k):
        assert k == {"safe_merge": True}
        raise ValueError("NaN detected in the merged weights")

    monkeypatch.setattr(LoraModel, "merge_and_unload", broken)
    with pytest.raises(UserError) as info:
        merge(str(tiny.adapter), str(tmp_path / "m"))
    assert info.value.render() == (
        f"error: merging {tiny.adapter} gives NaN or inf weights (NaN detected in the merged weights)\n"
        "  the adapter is broken (a diverged run?); retrain with a lower learning rate")
    monkeypatch.setattr(LoraModel, "merge_and_unload", lambda self, **k: (_ for _ in ()).throw(ValueError("other")))
    with pytest.raises(ValueError, match="^other$"):
        merge(str(tiny.adapter), str(tmp_path / "m"))
    assert list(tmp_path.iterdir()) == []


def test_merge_of_a_qlora_run_merges_on_the_dequantized_base_and_reports_the_4bit_difference(tiny, tmp_path):
    import yaml

    run = tmp_path / "qrun"
    shutil.copytree(tiny.run, run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    cfg["method"] = "qlora"
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    res = merge(str(run), str(tmp_path / "m"))
    assert res.max_logit_diff < 1e-5 and res.size_bytes == tiny.n_base * 4  # merged in fp32, not 4-bit
    # NF4 rounding shows (0.07 here), but the 4-bit model carries the adapter too: without it the
    # difference is 0.60 (measured on this fixture), and |4-bit + merged| would be 0.76
    assert res.max_logit_diff_4bit is not None and 1e-4 < res.max_logit_diff_4bit < 0.2
    assert f"merged vs 4-bit base+adapter: {res.max_logit_diff_4bit:.3g}" in (tmp_path / "m" / "README.md").read_text()


def test_merge_module_names_the_probe_text():
    assert merge_mod.PROBE_TEXT.startswith("SELECT name FROM customers")
