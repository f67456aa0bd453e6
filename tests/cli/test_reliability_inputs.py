"""The bad-input corpus for `lmtune train`: config, model, output directory and data mistakes.

Every case runs the real CLI (`lmtune.cli.main`) on real files in tmp_path and asserts: exit code 2,
one `error:` message that names where (a config key or file:line) and says how to fix it, no
traceback, and that nothing was written: the tree under tmp_path (and the base model's directory)
is byte-for-byte what it was before the command. Record-level data mistakes run through
`lmtune data check` in test_data_errors.py; the data cases here go through `lmtune train` and are the
ones that file does not cover. Merge/generate cases are in test_reliability_runs.py.
docs/reliability.md lists every case; a test below keeps that table in sync.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from cli_runs import lmtune_process
from lmtune.cli import main
from tiny_models import save_tiny_model, write_alpaca

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"instruction": "Customers in Oslo?", "input": "", "output": "SELECT name FROM customers;"}


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("reliability") / "base", "llama")


@dataclass
class Tmp:
    """One case's sandbox: a valid config (cfg.yaml) and data, output.dir = out/ (absent)."""

    root: Path
    model: Path

    def __post_init__(self):
        self.data = write_alpaca(self.root / "train.jsonl", 12)
        self.out = self.root / "out"
        self.config = {"model": {"name_or_path": str(self.model)},
                       "data": {"train": [str(self.data)], "val_split": 0.2, "max_length": 96},
                       "train": {"max_steps": 2, "batch_size": 2, "grad_accum": 1, "threads": 1},
                       "eval": {"after_train": False, "forgetting_check": False},
                       "output": {"dir": str(self.out), "report": False}}

    def train(self, *overrides: str) -> list[str]:
        cfg = self.root / "cfg.yaml"
        cfg.write_text(yaml.safe_dump(self.config, sort_keys=False))
        return ["train", str(cfg), *overrides]

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def model_copy(self, name: str, drop: tuple[str, ...] = ()) -> Path:
        dest = self.root / name
        shutil.copytree(self.model, dest, ignore=shutil.ignore_patterns(*drop))
        return dest


def jl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


# A case sets up its files and returns (argv, where, fix): `where` must appear in the message (key
# or file:line), and so must `fix` (what to do). Paths in them are absolute, built from t.root.
CASES: dict[str, callable] = {}


def case(fn):
    CASES[fn.__name__.removeprefix("case_").replace("_", "-")] = fn
    return fn


# ---------------------------------------------------------------- config: YAML and overrides

@case
def case_unknown_key(t):
    return t.train("train.lr=1e-3"), "train.lr: unknown key", "did you mean 'train.learning_rate'"


@case
def case_unknown_section(t):
    return t.train("trian.epochs=1"), "trian: unknown key", "allowed: model, data, method"


@case
def case_wrong_type_number(t):
    return t.train("train.epochs=three"), "train.epochs: got 'three'", "expected a number"


@case
def case_wrong_type_bool(t):
    return t.train("data.packing=maybe"), "data.packing: got 'maybe'", "expected true/false"


@case
def case_wrong_type_list(t):
    t.config["data"]["train"] = {"file": str(t.data)}
    return t.train(), "data.train: got {'file'", "expected a list of strings"


@case
def case_negative_learning_rate(t):
    return t.train("train.learning_rate=-0.001"), "train.learning_rate: got -0.001", "must be > 0.0"


@case
def case_zero_learning_rate(t):
    return t.train("train.learning_rate=0"), "train.learning_rate: got 0.0", "must be > 0.0"


@case
def case_lora_r_zero(t):
    return t.train("lora.r=0"), "lora.r: got 0", "must be >= 1"


@case
def case_lora_dropout_range(t):
    return t.train("lora.dropout=1.5"), "lora.dropout: got 1.5", "must be <= 0.9"


@case
def case_empty_target_modules(t):
    return t.train("lora.target_modules=[]"), "lora.target_modules: empty", "or 'all-linear'"


@case
def case_unknown_method(t):
    return t.train("method=qlora2"), "method: got 'qlora2'", "allowed: full, lora, qlora"


@case
def case_unknown_task(t):
    return t.train("data.task=poetry"), "data.task: got 'poetry'", "allowed: null, sql, json, catalogue"


@case
def case_val_split_range(t):
    return t.train("data.val_split=0.9"), "data.val_split: got 0.9", "must be <= 0.5"


@case
def case_save_total_limit_zero(t):
    return t.train("train.save_total_limit=0"), "train.save_total_limit: got 0", "must be >= 1"


@case
def case_eval_steps_without_validation(t):
    return (t.train("data.val_split=0", "train.eval_steps=5"), "train.eval_steps: needs validation data",
            "set data.validation or data.val_split > 0")


@case
def case_early_stopping_without_validation(t):
    return (t.train("data.val_split=0", "train.early_stopping_patience=2"),
            "train.early_stopping_patience: needs validation data", "data.val_split > 0")


@case
def case_save_steps_not_multiple_of_eval(t):
    return (t.train("train.eval_steps=2", "train.save_steps=3"), "train.save_steps: 3 must be a multiple",
            "set train.save_steps=2, or train.load_best=false")


@case
def case_forgetting_thresholds(t):
    return t.train("eval.forgetting_fail=1.2"), "eval.forgetting_fail: got 1.2", "must be >= eval.forgetting_warn"


@case
def case_no_training_data(t):
    return t.train("data.train=[]"), "data.train: no training data", "set data.train to a file or data.task"


@case
def case_override_without_equals(t):
    return t.train("train.epochs"), "'train.epochs': overrides look like key.sub=value", "e.g. train.epochs=2"


@case
def case_section_given_a_value(t):
    return t.train("train=3"), "train: expected a mapping of keys", "got 3"


@case
def case_config_file_missing(t):
    missing = t.root / "nope.yaml"
    return ["train", str(missing)], f"config file not found: {missing}", "pass the path of a YAML file"


@case
def case_config_yaml_syntax(t):
    cfg = t.write("bad.yaml", "model:\n  name_or_path: x\n data: [\n")
    return ["train", str(cfg)], f"{cfg}:3: not valid YAML", "expected <block end>"


@case
def case_config_not_mapping(t):
    cfg = t.write("list.yaml", "- model\n- data\n")
    return ["train", str(cfg)], f"{cfg}: the top level must be a mapping", "got list"


@case
def case_config_not_utf8(t):
    cfg = t.write("latin1.yaml", b"model:\n  name_or_path: caf\xe9\n")
    return ["train", str(cfg)], f"{cfg}: not UTF-8 text", "at byte 26"


@case
def case_fp16_on_cpu(t):
    if __import__("torch").cuda.is_available():
        pytest.skip("fp16 is allowed on a GPU")
    return t.train("train.precision=fp16"), "train.precision: fp16 mixed precision needs a GPU", "use precision: auto or fp32"


# ---------------------------------------------------------------- model source

@case
def case_model_path_missing(t):
    missing = t.root / "models" / "nope"
    return t.train(f"model.name_or_path={missing}"), f"model.name_or_path: {missing} does not exist", "give the directory"


@case
def case_model_dir_without_config(t):
    d = t.model_copy("noconfig", drop=("config.json",))
    return t.train(f"model.name_or_path={d}"), "is not a model directory (no config.json)", "saved with save_pretrained"


@case
def case_model_without_weights(t):
    d = t.model_copy("noweights", drop=("*.safetensors",))
    return (t.train(f"model.name_or_path={d}"), f"model.name_or_path: {d} has a config.json but no weight files",
            "save_pretrained")


@case
def case_pickle_weights_refused(t):
    import torch
    from safetensors.torch import load_file

    d = t.model_copy("pickled", drop=("*.safetensors",))
    torch.save(load_file(str(t.model / "model.safetensors")), d / "pytorch_model.bin")
    return (t.train(f"model.name_or_path={d}"), f"model.name_or_path: {d} has only pickle weights (pytorch_model.bin)",
            "or set model.allow_pickle=true if you trust the source")


@case
def case_remote_code_refused(t):
    d = t.model_copy("remote")
    cfg = json.loads((d / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "modeling_evil.py").write_text("import os\nos.system('touch /tmp/pwned')\n")
    return (t.train(f"model.name_or_path={d}"), f"model.name_or_path: {d} needs custom code from the model repo",
            "set model.trust_remote_code=true only if you trust that code")


@case
def case_truncated_weights(t):
    d = t.model_copy("truncated")
    weights = d / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return t.train(f"model.name_or_path={d}"), f"{weights}: truncated", "fetch the model again"


@case
def case_corrupt_weights_header(t):
    d = t.model_copy("corrupt")
    (d / "model.safetensors").write_bytes(b"\xff" * 64)
    return (t.train(f"model.name_or_path={d}"), f"{d / 'model.safetensors'}: not a valid safetensors file",
            "fetch the model again")


@case
def case_lora_target_not_in_model(t):
    return (t.train("lora.target_modules=[q_prj,v_proj]"), "lora.target_modules: q_prj not found",
            "modules with 2-D weights in this model: down_proj, embed_tokens, gate_proj, k_proj")


# ---------------------------------------------------------------- output directory

@case
def case_output_not_empty(t):
    t.write("out/notes.txt", "my earlier run")
    return t.train(), f"output.dir: {t.out} is not empty", "set output.overwrite=true"


@case
def case_output_is_a_file(t):
    t.write("out", "a file")
    return t.train(), f"output.dir: {t.out} exists and is not a directory", "choose a directory path"


@case
def case_output_parent_is_a_file(t):
    t.write("parent", "a file")
    return (t.train(f"output.dir={t.root / 'parent' / 'run'}"), f"output.dir: {t.root / 'parent'} is not a directory",
            "choose a path whose parents are directories")


@case
def case_output_unwritable(t):
    if os.geteuid() == 0:  # root writes through permission bits; sysfs refuses everyone
        target = Path("/sys/lmtune-reliability-test/run")
        where = "output.dir: cannot write under /sys"
    else:
        locked = t.root / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        target = locked / "run"
        where = f"output.dir: cannot write under {locked}"
    return t.train(f"output.dir={target}"), where, "choose a directory you can write to"


@case
def case_resume_missing_run(t):
    return t.train("--resume"), f"--resume: run directory {t.out} does not exist", "start a run first"


@case
def case_resume_symlink_escapes_run(t):
    outside = t.write("elsewhere/metrics.jsonl", "")
    t.write("out/config.yaml", "{}\n")
    (t.out / "metrics.jsonl").symlink_to(outside)
    return (t.train("--resume"), f"output.dir: {t.out / 'metrics.jsonl'} is a symlink to {outside}, outside the run",
            f"replace the link by a real directory or file (rm {t.out / 'metrics.jsonl'})")


@case
def case_resume_symlinked_checkpoint(t):
    outside = t.root / "elsewhere" / "checkpoint-2"
    outside.mkdir(parents=True)
    (t.out / "checkpoints").mkdir(parents=True)
    (t.out / "checkpoints" / "checkpoint-2").symlink_to(outside, target_is_directory=True)
    return (t.train("--resume"), f"{t.out / 'checkpoints' / 'checkpoint-2'} is a symlink to {outside}",
            "lmtune writes only inside the run")


def _previous_run(t, *overrides: str) -> None:
    """out/ as a run left it: its resolved config.yaml (what --resume compares against)."""
    from lmtune.config import load_config

    t.train()
    saved = load_config(t.root / "cfg.yaml", list(overrides))
    t.write("out/config.yaml", saved.to_yaml())


@case
def case_resume_with_another_base(t):
    other = t.model_copy("other-base")
    _previous_run(t, f"model.name_or_path={other}")
    return (t.train("--resume"), f"model.name_or_path: the run used '{other}', now '{t.model}'",
            "resume with the run's own config")


@case
def case_resume_with_another_lora_rank(t):
    _previous_run(t)
    return t.train("lora.r=8", "--resume"), "lora.r: the run used 16, now 8", "or start a new run in another output.dir"


@case
def case_overwrite_through_symlink(t):
    real = t.root / "real-run"
    real.mkdir()
    (real / "keep.txt").write_text("not yours to delete")
    t.out.symlink_to(real, target_is_directory=True)
    return (t.train("output.overwrite=true"), f"output.dir: {t.out} is a symlink; output.overwrite will not delete",
            f"give the real path ({real})")


# ---------------------------------------------------------------- data, through `lmtune train`

@case
def case_data_file_missing(t):
    return t.train(f"data.train={t.root / 'nope.jsonl'}"), f"{t.root / 'nope.jsonl'}: file not found", "fix each line below"


@case
def case_data_bom_then_bad_line(t):
    # A UTF-8 BOM is accepted (Excel and Notepad write one); it must not shift or hide line numbers.
    f = t.write("bom.jsonl", b"\xef\xbb\xbf" + jl(GOOD, '{"instruction": "x" "output": "y"}').encode())
    return t.train(f"data.train={f}"), f"{f}:2: malformed JSON", "fix each line below"


@case
def case_data_bad_line_deep_in_file(t):
    rows = [dict(GOOD, instruction=f"Customers in city {i}?") for i in range(400)]
    rows[357] = dict(GOOD, output=["SELECT 1;"])
    f = t.write("big.jsonl", jl(*rows))
    return t.train(f"data.train={f}"), f"{f}:358: expected a string, got a list (output)", "fix each line below"


@case
def case_validation_file_bad(t):
    f = t.write("val.jsonl", jl(GOOD, {"instruction": "Where?", "output": ""}))
    return t.train(f"data.validation={f}"), f"{f}:2: empty string (output)", "validation data"


@case
def case_validation_format_differs(t):
    f = t.write("val.jsonl", jl({"messages": [{"role": "user", "content": "Hi"},
                                              {"role": "assistant", "content": "Hello."}]}))
    return (t.train(f"data.validation={f}"), "training files are alpaca, validation files are chat",
            "use one format for both")


@case
def case_examples_all_too_long(t):
    return (t.train("data.max_length=8"), "data.max_length: 8 leaves no answer token in any example",
            "raise it")


@case
def case_data_csv_missing_column_in_train(t):
    f = t.write("d.csv", "instruction,answer\nName a colour.,Blue\n")
    return t.train(f"data.train={f}"), f"{f}:1: missing column(s) output", "alpaca data needs instruction, output"


@case
def case_data_parquet_wrong_schema_in_train(t):
    import pyarrow as pa
    import pyarrow.parquet as pq

    f = t.root / "d.parquet"
    pq.write_table(pa.table({"instruction": ["q"], "output": [3]}), f)
    return t.train(f"data.train={f}"), f"{f}: column 'output' has type int64, expected string", "fix each line below"


@case
def case_data_directory_without_files(t):
    d = t.root / "datadir"
    d.mkdir()
    (d / "notes.md").write_text("no data here")
    return t.train(f"data.train={d}"), f"{d}: no data files (.jsonl, .json, .csv, .tsv, .parquet)", "fix each line below"


# ---------------------------------------------------------------- the runner

def snapshot(*roots: Path) -> dict[str, str]:
    """Every path under `roots` -> content hash (files), 'dir' or 'link -> target'."""
    out = {}
    for root in roots:
        for p in [root, *root.rglob("*")]:
            if p.is_symlink():
                out[str(p)] = f"link -> {os.readlink(p)}"
            elif p.is_dir():
                out[str(p)] = "dir"
            elif p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_clear_message_and_writes_nothing(name, tmp_path, base, capsys):
    t = Tmp(tmp_path, base)
    argv, where, fix = CASES[name](t)
    out_existed = t.out.exists() or t.out.is_symlink()
    before = snapshot(tmp_path, base)
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    message = err[err.index("error: "):]
    assert where in message, message
    assert fix in message, message
    assert message.count("error: ") == 1
    assert out_existed or not t.out.exists(), "the output directory was created"
    assert snapshot(tmp_path, base) == before, "a file was written, changed or removed"


def test_the_real_process_prints_no_traceback(tmp_path, base):
    """Two cases in a fresh interpreter: the exit status and stderr the user sees."""
    t = Tmp(tmp_path, base)
    bad = t.write("bad.jsonl", '{"instruction": "a", "output": "b"}\n{"instruction": 3\n')
    for argv, where in ((t.train("lora.r=0"), "lora.r: got 0"),
                        (t.train(f"model.name_or_path={tmp_path / 'nope'}"), "does not exist"),
                        (t.train(f"data.train={bad}"), "bad.jsonl:2: malformed JSON")):
        proc, loaded = lmtune_process(*argv, cwd=ROOT, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr and where in proc.stderr
        assert not t.out.exists()
        assert loaded == []   # refused before training's libraries (peft, transformers' trainer) load


def test_docs_table_lists_every_case():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    missing = [name for name in CASES if f"`{name}`" not in doc]
    assert missing == []
