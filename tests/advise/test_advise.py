"""`lmtune advise`: every branch of the decision framework, the when-not warnings, data reading,
hardware-driven method choice, and the configs it writes validate."""

import argparse
import json

import pytest
import yaml

from lmtune.advise import Answers, Context, DataSummary, advise, answers_from_dict, summarize_data
from lmtune.cli import main
from lmtune.commands.advise import collect_answers, register
from lmtune.config import load_config
from lmtune.errors import UserError
from lmtune.estimate.hardware import GIB, Device, find_gpu

SMALL = "qwen2.5-0.5b"


def ctx(model=SMALL, memory_gib=80.0, n=None, seq_len=512, **kw) -> Context:
    data = None
    if n is not None:
        data = DataSummary(["train.jsonl"], n, n, 0, 0, 0, 100, 200, 300)
    dev = Device("t", f"test {memory_gib} GiB", "cuda", int(memory_gib * GIB), 100.0, 0.4, 1.0)
    return Context(model, data, dev, 1, seq_len, **kw)


def test_q1_few_shot_means_icl():
    assert advise(Answers(few_shot_works=True), ctx(n=5000)).verdict == "icl"


@pytest.mark.parametrize("answer", ["needs_knowledge", "factual_qa", "changing_domain"])
def test_knowledge_questions_mean_rag(answer):
    adv = advise(Answers(**{answer: True}), ctx(n=5000))
    assert adv.verdict == "rag" and adv.config is None


def test_q3_too_few_examples():
    few = advise(Answers(), ctx(n=300))
    assert few.verdict == "not-yet" and any("< 500" in w for w in few.warnings)
    some = advise(Answers(), ctx(n=800))
    assert some.verdict == "not-yet" and not any("< 500" in w for w in some.warnings)
    with pytest.raises(UserError, match="how many"):
        advise(Answers(), ctx(n=None))
    assert advise(Answers(examples=2000), ctx(n=None)).fine_tune


def test_q4_not_style_means_rag_plus_icl():
    adv = advise(Answers(style_or_behaviour=False), ctx(n=5000))
    assert adv.verdict == "rag" and "ICL" in adv.reasons[0]


def test_q5_prompting_not_exhausted():
    assert advise(Answers(prompting_exhausted=False), ctx(n=5000)).verdict == "not-yet"


def test_no_metric_means_not_yet():
    adv = advise(Answers(has_metric=False), ctx(n=5000))
    assert adv.verdict == "not-yet" and any("metric" in w for w in adv.warnings)


def test_every_when_not_condition_warns():
    adv = advise(Answers(many_tasks=True, tight_budget=True, changing_domain=True, factual_qa=True,
                         has_metric=False), ctx(n=100))
    text = " ".join(adv.warnings)
    for word in ("< 500", "daily/weekly", "unrelated tasks", "metric", "budget", "factual"):
        assert word in text


@pytest.mark.parametrize("model,priority,memory,expected", [
    (SMALL, "quality", 80, "full"), (SMALL, "balance", 80, "lora"), (SMALL, "memory", 80, "qlora"),
    (SMALL, "quality", 4, "lora"),             # full does not fit 4 GiB, LoRA does
    ("llama-3.1-8b", "balance", 12, "qlora"),  # LoRA's 16-bit 8B base does not fit 12 GiB, QLoRA does
])
def test_q6_method_follows_priority_and_hardware(model, priority, memory, expected):
    adv = advise(Answers(priority=priority), ctx(model=model, memory_gib=memory, n=5000))
    assert adv.verdict == expected
    assert adv.estimate["peak_gib"] <= memory


def test_tight_budget_rules_out_full():
    adv = advise(Answers(priority="quality", tight_budget=True), ctx(memory_gib=80, n=5000))
    assert adv.verdict in ("lora", "qlora")


def test_nothing_fits_means_not_yet():
    adv = advise(Answers(), ctx(model="llama-3.1-70b", memory_gib=8, n=5000))
    assert adv.verdict == "not-yet" and any("does not fit" in r for r in adv.reasons)


def test_checkpointing_turned_on_when_needed():
    adv = advise(Answers(priority="memory"), ctx(model="llama-3.1-8b", memory_gib=12, n=5000, seq_len=2048))
    assert adv.verdict == "qlora" and adv.hyperparameters["gradient_checkpointing"] is True


def test_hyperparameters_come_from_the_auto_rule():
    # advise and train share lmtune.train.hparams: Qwen2.5-0.5B is 896 wide -> factor (4096/896)^0.58 = 2.4
    full_adv = advise(Answers(priority="quality"), ctx(n=5000))
    lora_adv = advise(Answers(), ctx(n=5000))
    full, lora = full_adv.hyperparameters, lora_adv.hyperparameters
    # 5,000 examples -> 4,560 after the test (200) and validation (5%) splits: 4 epochs by count;
    # no token count here, so a row per example: 285 steps per epoch at 16 rows, above the step floor
    assert lora["epochs"] == 4.0 and any("4,560 examples" in line for line in lora_adv.auto)
    # 4 x 285 = 1,140 steps: LoRA 2e-4 x (1 + 1.4 x sqrt(700/1140)) = 4.2e-4 (4.8e-4 at <= 700 steps);
    # full's own factor (4096/896)^0.83 = 3.5: 2e-5 x (1 + 2.5 x sqrt(700/1140)) = 6e-5
    assert full["learning_rate"] == 6e-5 and lora["learning_rate"] == 4.2e-4
    assert any("shrunk for 1,140 optimizer steps" in line for line in lora_adv.auto)
    assert lora["warmup_ratio"] == 0.1 and (lora["lora_r"], lora["lora_alpha"]) == (16, 32)
    # the per-device batch `lmtune train` picks on a GPU (4) and its grad_accum (4)
    assert (lora["batch_size"], lora["grad_accum"], lora["effective_batch"]) == (4, 4, 16)
    assert lora_adv.config["train"]["learning_rate"] == "auto" == lora_adv.config["train"]["epochs"]


def _write_data(path, n, dupes=0):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps({"instruction": f"task {i}", "input": "x" * (40 + i % 400), "output": f"answer {i}"}) + "\n")
        for i in range(dupes):
            f.write(json.dumps({"instruction": f"task {i}", "input": "x" * (40 + i % 400), "output": f"answer {i}"}) + "\n")


def test_reads_the_dataset(tmp_path):
    path = tmp_path / "train.jsonl"
    _write_data(path, 1200, dupes=30)
    d = summarize_data([str(path)])
    assert (d.examples, d.records, d.duplicates) == (1200, 1230, 30)
    assert 10 < d.tokens_p50 < d.tokens_p95 <= d.tokens_max
    with pytest.raises(UserError, match="not found"):
        summarize_data([str(tmp_path / "missing.jsonl")])


def test_cli_writes_a_config_that_validates(tmp_path, capsys):
    data, out = tmp_path / "train.jsonl", tmp_path / "advised.yaml"
    _write_data(data, 1500, dupes=5)
    code = main(["advise", "--model", SMALL, "--data", str(data), "--gpu", "4090", "--yes", "--out", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "verdict: fine-tune: LoRA" in text and "5 exact duplicate" in text
    assert out.read_text().startswith(f"# lmtune train {out}")
    cfg = load_config(out)
    assert cfg.method == "lora" and cfg.model.name_or_path == "Qwen/Qwen2.5-0.5B"
    assert cfg.data.train == [str(data)] and cfg.data.max_length % 64 == 0
    assert cfg.train.batch_size * cfg.train.grad_accum >= 16


def test_cli_no_config_unless_forced(tmp_path):
    out = tmp_path / "a.yaml"
    args = ["advise", "--model", SMALL, "--examples", "3000", "--few-shot-works", "yes", "--gpu", "a100-80",
            "--yes", "--out", str(out)]
    assert main(args) == 0 and not out.exists()
    assert main(args + ["--force"]) == 0 and load_config(out).method == "lora"


def test_answers_file_and_flags(tmp_path):
    answers = tmp_path / "answers.yaml"
    answers.write_text(yaml.safe_dump({"examples": 4000, "priority": "memory", "tight_budget": True}))
    p = argparse.ArgumentParser()
    register(p)
    got = collect_answers(p.parse_args(["--answers", str(answers), "--priority", "quality"]), interactive=False)
    assert (got.examples, got.priority, got.tight_budget) == (4000, "quality", True)
    answers.write_text(yaml.safe_dump({"exampels": 10, "priority": "fast"}))
    with pytest.raises(UserError) as err:
        collect_answers(p.parse_args(["--answers", str(answers)]), interactive=False)
    assert len(err.value.problems) == 2
    with pytest.raises(UserError):
        answers_from_dict({"few_shot_works": "maybe"})


def test_interactive_questions_with_defaults():
    p = argparse.ArgumentParser()
    register(p)
    replies = iter(["", "n", "", "", "maybe", "2,500", "y", "", "", "", "", "", "memory"])
    asked = []

    def ask(prompt):
        asked.append(prompt)
        return next(replies)

    got = collect_answers(p.parse_args([]), ask=ask, interactive=True)
    assert got.few_shot_works is False and got.examples == 2500 and got.priority == "memory"
    assert len(asked) == 13          # 12 questions, one asked twice after "maybe"
    assert find_gpu("RTX 3090").name == "RTX 3090 24GB"


def test_cpu_prefers_lora_over_qlora():
    from lmtune.estimate.hardware import cpu_device, detect_devices

    cpu = cpu_device(memory_gib=16, cores=2)
    adv = advise(Answers(priority="memory", examples=3000), Context(SMALL, None, cpu, 1, 512))
    assert adv.verdict == "lora"                     # 4-bit on CPU is slower than fp32 LoRA
    dev, count = detect_devices()
    assert count >= 1 and dev.memory_bytes > 0
