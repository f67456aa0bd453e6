"""Few-shot prompts and scoring a plain model on its own (`lmtune eval tiny --task sql --few-shot K`)."""

from __future__ import annotations

import json

import pytest

from lmtune.cli import main
from lmtune.data.formats import Example
from lmtune.data.templates import AlpacaTemplate, ChatMLTemplate, Rendered
from lmtune.evaluate.few_shot import few_shot_prompts


def _alpaca(instruction: str, output: str, input_text: str = "") -> Example:
    return Example(source="t", format="alpaca",
                   messages=[{"role": "user", "content": instruction + (f"\n\n{input_text}" if input_text else "")},
                             {"role": "assistant", "content": output}],
                   fields={"instruction": instruction, "input": input_text, "output": output})


SHOTS = [_alpaca("Count the cities", "SELECT COUNT(*) FROM cities"),
         _alpaca("List the names", "SELECT name FROM customers", "customers(id, name)")]
TEST = _alpaca("How many orders?", "SELECT COUNT(*) FROM orders")


def test_chat_template_gets_one_conversation_with_the_shots_answered():
    [prompt] = few_shot_prompts(ChatMLTemplate(system_prompt="Write SQL."), SHOTS, [TEST])
    assert isinstance(prompt, Rendered)
    assert prompt == ("<|im_start|>system\nWrite SQL.<|im_end|>\n"
                      "<|im_start|>user\nCount the cities<|im_end|>\n"
                      "<|im_start|>assistant\nSELECT COUNT(*) FROM cities<|im_end|>\n"
                      "<|im_start|>user\nList the names\n\ncustomers(id, name)<|im_end|>\n"
                      "<|im_start|>assistant\nSELECT name FROM customers<|im_end|>\n"
                      "<|im_start|>user\nHow many orders?<|im_end|>\n"
                      "<|im_start|>assistant\n")
    assert "SELECT COUNT(*) FROM orders" not in prompt      # the test answer never leaks


def test_single_turn_layout_repeats_whole_training_examples():
    template = AlpacaTemplate()
    [prompt] = few_shot_prompts(template, SHOTS, [TEST])
    assert prompt == (template.render(SHOTS[0]) + "\n\n" + template.render(SHOTS[1]) + "\n\n"
                      + template.render_prompt(TEST))
    assert prompt.endswith("### Instruction:\nHow many orders?\n\n### Response:\n")
    assert prompt.count("### Response:") == 3


def test_zero_shots_leave_the_prompts_alone():
    assert few_shot_prompts(AlpacaTemplate(), [], [TEST]) == [TEST]


def test_a_chat_in_progress_is_all_prompt():
    chat = Example(source="t", format="chat", messages=[
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}])
    assert [m["content"] for m in chat.prompt_messages()] == ["a", "b", "c"]
    assert [m["content"] for m in TEST.prompt_messages()] == ["How many orders?"]


def test_plain_model_is_scored_on_its_own_with_shots(tmp_path, capsys):
    out = tmp_path / "before"
    code = main(["eval", "tiny", "--task", "sql", "--few-shot", "2", "--num-samples", "2",
                 "--max-new-tokens", "4", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    ev = json.loads((out / "eval.json").read_text())
    assert ev["subject"] == "model" and ev["method"] is None
    assert ev["settings"]["few_shot"] == 2 and ev["task"]["examples"] == 2
    assert ev["task"]["base"] is None and ev["forgetting"] is None
    assert set(ev["task"]["tuned"]) == {"execution_accuracy", "exact_match", "executable"}
    assert ev["validation"]["tuned"]["examples"] == 200          # the bundled validation split
    assert "2-shot prompts" in printed and "model" in printed


def test_plain_model_needs_a_task_or_test_file(capsys):
    assert main(["eval", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "nothing to compare" in err and "--task sql" in err
    assert main(["eval", "tiny", "--task", "nope"]) == 2
    assert "data.task" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--few-shot=-1"])
def test_negative_shots_are_refused(flag, capsys):
    assert main(["eval", "tiny", "--task", "sql", flag]) == 2
    assert "--few-shot: got -1, must be >= 0" in capsys.readouterr().err
