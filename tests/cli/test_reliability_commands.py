"""The bad-input corpus for every command besides `lmtune train`'s own (test_reliability_inputs.py):
generate, merge and eval here; advise, compare, report, estimate, data and train's numbers (NaN, inf,
out of range) in test_reliability_flags.py, through the runner below. Each case runs the CLI in-process on real files and asserts exit code 2, one `error:`
message naming the flag or key and the path, and that the tree under tmp_path is byte for byte what
it was. All of them fail before a model loads: no weights exist here (the "model" and the run are
config files only), so a check that came too late would fail the test with another message.
docs/reliability.md lists every case; a test below keeps that table in sync.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from lmtune.cli import main
from test_reliability_inputs import snapshot

ROOT = Path(__file__).resolve().parents[2]
PROMPT = {"instruction": "Customers in Oslo?", "input": "", "output": "SELECT name FROM customers;"}


class Tmp:
    """tmp_path as the current directory, with a fake base model (config.json only), a fake run
    (config.yaml, adapter/adapter_config.json), a prompt file and a data file."""

    def __init__(self, root: Path):
        self.root = root
        self.base = self.mkdir("base")
        (self.base / "config.json").write_text(json.dumps({"model_type": "llama"}))
        self.run = self.mkdir("run")
        (self.run / "config.yaml").write_text(yaml.safe_dump(
            {"model": {"name_or_path": str(self.base)}, "data": {"task": "sql"}}))
        self.mkdir("run/adapter")
        (self.run / "adapter" / "adapter_config.json").write_text(
            json.dumps({"base_model_name_or_path": str(self.base), "peft_type": "LORA"}))
        self.prompts = self.write("prompts.jsonl", json.dumps({"prompt": "Hello"}) + "\n")
        self.data = self.write("train.jsonl", json.dumps(PROMPT) + "\n")
        self.config = self.write("cfg.yaml", yaml.safe_dump(
            {"model": {"name_or_path": str(self.base)}, "data": {"train": [str(self.data)]},
             "output": {"dir": str(root / "out")}}))

    def mkdir(self, name: str) -> Path:
        (self.root / name).mkdir(parents=True, exist_ok=True)
        return self.root / name

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def link(self, name: str, target: Path) -> Path:
        (self.root / name).symlink_to(target, target_is_directory=target.is_dir())
        return self.root / name


CASES: dict[str, callable] = {}


def case(fn):
    CASES[fn.__name__.removeprefix("case_").replace("_", "-")] = fn
    return fn


def gen(t: Tmp, *flags: str) -> list[str]:
    return ["generate", str(t.run), *flags]


# ---------------------------------------------------------------- generate

@case
def case_gen_prompt_file_missing(t):
    return gen(t, "--file", "nope.jsonl"), "--file nope.jsonl: file not found", "check the path"


@case
def case_gen_prompt_file_binary(t):
    t.write("bin.jsonl", b'{"prompt": "a"}\n\x89PNG\x00\xff\n')
    return gen(t, "--file", "bin.jsonl"), "--file bin.jsonl:2: not UTF-8 text", "save the file as UTF-8"


@case
def case_gen_prompt_file_is_a_directory(t):
    t.mkdir("prompts")
    return gen(t, "--file", "prompts"), "--file prompts: is a directory, expected a file", "give the path of a file"


@case
def case_gen_prompt_file_empty(t):
    t.write("empty.jsonl", "\n\n")
    return gen(t, "--file", "empty.jsonl"), "--file empty.jsonl: no prompts", "one JSON prompt per line"


@case
def case_gen_prompt_file_bad_json(t):
    t.write("bad.jsonl", '{"prompt": "a"}\n{"prompt": \n')
    return gen(t, "--file", "bad.jsonl"), "bad.jsonl:2: malformed JSON", "bad.jsonl: 1 bad prompt lines"


@case
def case_gen_max_new_tokens_zero(t):
    return gen(t, "--prompt", "hi", "--max-new-tokens", "0"), "--max-new-tokens: got 0, must be >= 1", ""


@case
def case_gen_max_new_tokens_negative(t):
    return gen(t, "--prompt", "hi", "--max-new-tokens", "-3"), "--max-new-tokens: got -3, must be >= 1", ""


@case
def case_gen_sample_with_temperature_zero(t):
    return (gen(t, "--prompt", "hi", "--sample", "--temperature", "0"), "--sample with --temperature 0",
            "drop --sample for greedy decoding")


@case
def case_gen_temperature_nan(t):
    return gen(t, "--prompt", "hi", "--sample", "--temperature", "nan"), "--temperature: got nan, must be a finite", ""


@case
def case_gen_temperature_negative(t):
    return gen(t, "--prompt", "hi", "--temperature", "-1"), "--temperature: got -1.0, must be >= 0", ""


@case
def case_gen_top_p_above_one(t):
    return gen(t, "--prompt", "hi", "--top-p", "2"), "--top-p: got 2.0, must be <= 1", ""


@case
def case_gen_top_p_zero(t):
    return gen(t, "--prompt", "hi", "--top-p", "0"), "--top-p: got 0.0, must be > 0", ""


@case
def case_gen_top_p_inf(t):
    return gen(t, "--prompt", "hi", "--top-p", "inf"), "--top-p: got inf, must be a finite number", ""


@case
def case_gen_seed_negative(t):
    return gen(t, "--prompt", "hi", "--seed", "-1"), "--seed: got -1, must be >= 0", ""


@case
def case_gen_empty_prompt(t):
    return gen(t, "--prompt", "  "), "--prompt: empty", "give the text to complete"


@case
def case_gen_out_without_file(t):
    return gen(t, "--prompt", "hi", "--out", "o.jsonl"), "--out writes the outputs of --file prompts", "add --file"


@case
def case_gen_out_exists(t):
    t.write("o.jsonl", "my earlier outputs\n")
    return gen(t, "--file", str(t.prompts), "--out", "o.jsonl"), "--out o.jsonl: already exists", "pass --overwrite"


@case
def case_gen_out_is_a_directory(t):
    return gen(t, "--file", str(t.prompts), "--out", "."), "--out .: is a directory", "e.g. --out out.txt"


@case
def case_gen_out_is_a_symlink(t):
    t.link("o.jsonl", t.write("elsewhere.jsonl", "x\n"))
    return gen(t, "--file", str(t.prompts), "--out", "o.jsonl", "--overwrite"), "--out o.jsonl: is a symlink", \
        "give the real path"


@case
def case_gen_out_parent_is_a_file(t):
    return (gen(t, "--file", str(t.prompts), "--out", "prompts.jsonl/o.jsonl"),
            f"--out prompts.jsonl/o.jsonl: {t.prompts} is not a directory", "whose parents are directories")


@case
def case_gen_model_missing(t):
    return ["generate", "./runs/nope", "--prompt", "hi"], "./runs/nope: no such run, adapter or model", "check the path"


@case
def case_gen_model_is_a_file(t):
    return ["generate", str(t.prompts), "--prompt", "hi"], f"{t.prompts}: is a file", "give the directory"


# ---------------------------------------------------------------- merge

@case
def case_merge_out_current_directory(t):
    os.chdir(t.mkdir("work"))
    return ["merge", str(t.run), "--out", "."], "--out . is the current directory", "name a new directory"


@case
def case_merge_out_parent_of_current_directory(t):
    os.chdir(t.mkdir("work/sub"))
    return (["merge", str(t.run), "--out", str(t.root / "work"), "--overwrite"],
            f"--out {t.root / 'work'} is the current directory (or holds it)", "name a new directory")


@case
def case_merge_out_symlink(t):
    t.link("m", t.mkdir("real"))
    return ["merge", str(t.run), "--out", "m"], "--out m is a symlink", "give the real path"


@case
def case_merge_out_parent_is_a_file(t):
    return (["merge", str(t.run), "--out", "prompts.jsonl/m"], f"--out {t.prompts} is not a directory",
            "whose parents are directories")


@case
def case_merge_overwrite_users_directory(t):
    t.write("mine/thesis.tex", "keep")
    return (["merge", str(t.run), "--out", "mine", "--overwrite"], "--out: mine was not written by lmtune",
            "choose another directory")


@case
def case_merge_out_is_the_base(t):
    return (["merge", str(t.run), "--out", str(t.base), "--overwrite"], f"--out: {t.base} holds {t.base}",
            "an input of this command")


@case
def case_merge_run_is_a_file(t):
    return ["merge", str(t.prompts), "--out", "m"], f"{t.prompts}: not a run, adapter or model directory", \
        "expected a run directory"


# ---------------------------------------------------------------- eval

@case
def case_eval_test_file_missing(t):
    return ["eval", str(t.run), "--test", "nope.jsonl"], "--test nope.jsonl: file not found", "check the path"


@case
def case_eval_test_file_binary(t):
    t.write("t.jsonl", b"\xff\xfe\x00binary")
    return ["eval", str(t.run), "--test", "t.jsonl"], "--test t.jsonl:1: not UTF-8 text", "save the file as UTF-8"


@case
def case_eval_max_new_tokens_zero(t):
    return ["eval", str(t.run), "--max-new-tokens", "0"], "--max-new-tokens: got 0, must be >= 1", ""


@case
def case_eval_batch_size_zero(t):
    return ["eval", str(t.run), "--batch-size", "0"], "--batch-size: got 0, must be >= 1", ""


@case
def case_eval_num_samples_negative(t):
    return ["eval", str(t.run), "--num-samples", "-2"], "--num-samples: got -2, must be >= 1", ""


@case
def case_eval_out_for_a_run(t):
    return ["eval", str(t.run), "--out", "res"], f"--out: {t.run} is a run directory", "drop --out"


@case
def case_eval_out_is_a_file(t):
    return (["eval", str(t.base), "--task", "sql", "--out", str(t.prompts)], f"--out {t.prompts} exists and is not a dir",
            "choose a directory path for --out")


@case
def case_eval_out_current_directory(t):
    return ["eval", str(t.base), "--task", "sql", "--out", "."], "--out . is the current directory", "name a new"


@case
def case_eval_model_missing(t):
    return ["eval", "./nope", "--task", "sql"], "./nope: no such run, adapter or model directory", "check the path"


# ---------------------------------------------------------------- the runner

def run_case(make_case, tmp_path: Path, capsys, monkeypatch) -> None:
    """Set up one case in tmp_path (the current directory), run it, check the contract."""
    monkeypatch.chdir(tmp_path)
    t = Tmp(tmp_path)
    argv, where, fix = make_case(t)
    before = snapshot(tmp_path)
    capsys.readouterr()
    try:
        rc = main(argv)
    finally:
        t.run.chmod(0o755)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    message = err[err.index("error: "):]
    assert where in message, message
    assert fix in message, message
    assert message.count("error: ") == 1
    assert snapshot(tmp_path) == before, "a file was written, changed or removed"


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_exits_2_with_one_clear_message_and_writes_nothing(name, tmp_path, capsys, monkeypatch):
    run_case(CASES[name], tmp_path, capsys, monkeypatch)


def test_docs_table_lists_every_case():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    assert [name for name in CASES if f"`{name}`" not in doc] == []
