"""lmtune/train/resume.py's resume_conflicts: which settings of a resumed run may not change (each
named with both values), what the method does not use, and keys an older run lacks. Plain dicts,
no files. The rest of --resume: test_resume.py."""

from __future__ import annotations

from lmtune.train.resume import resume_conflicts


def _cfg(**over):
    cfg = {"method": "lora", "model": {"name_or_path": "m", "revision": None},
           "lora": {"r": 8, "alpha": 16}, "quant": {"bits": 4},
           "data": {"task": "sql", "train": ["a"], "max_length": 512}, "train": {"batch_size": 1, "seed": 0}}
    for dotted, value in over.items():
        d = cfg
        *head, last = dotted.split("__")
        for part in head:
            d = d[part]
        d[last] = value
    return cfg


def test_resume_conflicts_name_each_changed_key_with_both_values():
    assert resume_conflicts(_cfg(), _cfg()) == []
    assert resume_conflicts(_cfg(), _cfg(data__max_length=256, train__seed=1)) == [
        "data.max_length: the run used 512, now 256", "train.seed: the run used 0, now 1"]
    assert resume_conflicts(_cfg(), _cfg(lora__r=16)) == ["lora.r: the run used 8, now 16"]
    assert resume_conflicts(_cfg(), _cfg(model__name_or_path="n", lora__r=16, lora__alpha=4)) == [
        "model.name_or_path: the run used 'm', now 'n'", "lora.r: the run used 8, now 16",
        "lora.alpha: the run used 16, now 4"]
    assert resume_conflicts(_cfg(), _cfg(method="full")) == ["method: the run used 'lora', now 'full'"]
    new = _cfg()
    del new["data"]["task"]
    [conflict] = resume_conflicts(_cfg(), new)
    assert conflict.startswith("data.task: the run used 'sql', now <object object at ")


def test_resume_conflicts_skip_what_the_method_does_not_use_and_keys_the_run_lacks():
    assert resume_conflicts(_cfg(), _cfg(quant={"bits": 8})) == []  # lora ignores quant
    assert resume_conflicts(_cfg(method="qlora"), _cfg(method="qlora", quant={"bits": 8})) == [
        "quant.bits: the run used 4, now 8"]
    full = _cfg(method="full")
    assert resume_conflicts(full, _cfg(method="full", lora={"r": 1}, quant={})) == []
    old = _cfg()
    del old["data"]["max_length"]  # an older lmtune did not save it
    assert resume_conflicts(old, _cfg(data__max_length=64)) == []
    assert resume_conflicts({"model": "flat"}, _cfg()) == []  # not a section: missing, skipped
    assert resume_conflicts(_cfg(), _cfg(lora=None)) == ["lora: the run used {'r': 8, 'alpha': 16}, now None"]
