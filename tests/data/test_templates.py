"""lmtune/data/formats.py and templates.py details the pipeline tests pass over: prompt/completion
and text records as loaded from a file, a template saved and rebuilt, the raw template, and how
the model's own chat template locates each answer (or refuses when it cannot). Literal expected
values."""

from __future__ import annotations

import json

import pytest

from data_reference import load_examples
from lmtune.data.formats import Example
from lmtune.data.templates import (AlpacaTemplate, ChatMLTemplate, ModelTemplate, RawTemplate, Segment,
                                   TemplateError, template_from_dict)
from tiny_models import build_tokenizer


def _file(tmp_path, records, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


# ---------------------------------------------------------------- formats.py

def test_prompt_completion_records_become_one_user_and_one_assistant_turn(tmp_path):
    path = _file(tmp_path, [{"prompt": "P1", "completion": "C1", "id": 7},
                            {"prompt": " ", "completion": "C2"}, {"completion": "C3"}])
    loaded = load_examples([path], "prompt_completion")
    [ex] = loaded.examples
    assert (ex.source, ex.format) == (f"{path}:1", "prompt_completion")
    assert ex.messages == [{"role": "user", "content": "P1"}, {"role": "assistant", "content": "C1"}]
    assert ex.fields == {"prompt": "P1", "completion": "C1", "id": 7}
    assert ex.response == "C1" and ex.prompt_messages() == [{"role": "user", "content": "P1"}]
    assert loaded.problems == [f"{path}:2: empty string (prompt)", f"{path}:3: missing field (prompt)"]


def test_text_records_keep_their_fields_and_source(tmp_path):
    path = _file(tmp_path, [{"text": "hello world", "meta": 1}])
    [ex] = load_examples([path], "text").examples
    assert (ex.source, ex.format, ex.text, ex.messages) == (f"{path}:1", "text", "hello world", None)
    assert ex.fields == {"text": "hello world", "meta": 1}


# ---------------------------------------------------------------- saved templates

@pytest.mark.parametrize("cls, name, stops", [(AlpacaTemplate, "alpaca", ["\n### Instruction:"]),
                                              (ChatMLTemplate, "chatml", ["<|im_end|>"]), (RawTemplate, "raw", [])])
def test_a_template_is_saved_and_rebuilt(cls, name, stops):
    saved = cls(system_prompt="Be brief.").to_dict()
    assert saved == {"name": name, "version": 1, "system_prompt": "Be brief.", "stop_strings": stops}
    again = template_from_dict(saved)
    assert type(again) is cls and again.system_prompt == "Be brief."
    assert repr(again) == f"{cls.__name__}({saved})"


def test_a_model_template_needs_its_tokenizer_and_unknown_names_are_refused():
    tok = build_tokenizer()
    saved = ModelTemplate(tok, system_prompt="S").to_dict()
    assert saved["name"] == "model" and saved["chat_template"] == tok.get_chat_template()
    assert template_from_dict(saved, tok).chat_template == saved["chat_template"]
    with pytest.raises(ValueError) as info:
        template_from_dict(saved)
    assert str(info.value) == "a 'model' template needs the tokenizer to render"
    with pytest.raises(ValueError) as info:
        template_from_dict({"name": "vicuna"})
    assert str(info.value) == "unknown template 'vicuna' in saved template data"


def test_chatml_trains_each_answer_and_its_end_marker_only():
    ex = Example(source="s", format="chat", messages=[
        {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "later"}])
    assert ChatMLTemplate().segments(ex) == [Segment("<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n", False),
                                             Segment("a<|im_end|>", True)]
    with pytest.raises(TemplateError) as info:
        ChatMLTemplate().segments(Example(source="s", format="text", text="t"))
    assert str(info.value) == "text records have no turns; use format text (raw)"


def test_chatml_prompt_of_an_empty_conversation_is_the_assistant_header():
    assert ChatMLTemplate().render_prompt([]) == "<|im_start|>assistant\n"
    assert ChatMLTemplate(system_prompt="S").render_prompt([]) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>assistant\n")


# ---------------------------------------------------------------- raw

def _pc(prompt, completion):
    return Example(source="s", format="prompt_completion", fields={"prompt": prompt, "completion": completion},
                   messages=[{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}])


def test_raw_template_trains_text_whole_and_only_the_completion():
    raw = RawTemplate()
    assert raw.segments(Example(source="s", format="text", text="all of it")) == [Segment("all of it", True)]
    assert raw.segments(Example(source="s", format="text")) == [Segment("", True)]
    assert raw.segments(_pc("Q: ", "A")) == [Segment("Q: ", False), Segment("A", True)]
    assert raw.render_prompt(_pc("Q: ", "A")) == "Q: "
    assert raw.render_prompt(Example(source="s", format="text", text="t")) == ""
    assert raw.render_prompt("as is") == "as is"
    alpaca = Example(source="s", format="alpaca", fields={"instruction": "i", "input": "", "output": "o"},
                     messages=[{"role": "user", "content": "i"}, {"role": "assistant", "content": "o"}])
    for call in (raw.segments, raw.render_prompt):
        with pytest.raises(TemplateError) as info:
            call(alpaca)
        assert str(info.value) == "alpaca records need a template (alpaca, chatml or model), not raw"


# ---------------------------------------------------------------- the model's own template

PLAIN = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
LINES = ("{% for m in messages %}{{ m['role'] }}:{{ m['content'] }}\n{% endfor %}"
         "{% if add_generation_prompt %}assistant:{% endif %}")
# the generation prompt is not how an assistant turn starts
OTHER_HEADER = ("{% for m in messages %}{{ m['role'] }}:{{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}bot:{% endif %}")
# the last assistant turn gets an end marker only while it is last
LAST_MARKED = ("{% for m in messages %}{{ m['role'] }}:{{ m['content'] }}"
               "{% if loop.last and m['role'] == 'assistant' %}<end>{% endif %}\n{% endfor %}"
               "{% if add_generation_prompt %}assistant:{% endif %}")


def _chat(*turns):
    roles = ["user", "assistant"] * len(turns)
    return Example(source="s", format="chat", messages=[{"role": r, "content": c} for r, c in zip(roles, turns)])


def _model(template):
    return ModelTemplate(build_tokenizer(chat_template=False), chat_template=template)


def test_model_template_segments_are_prompt_answer_prompt():
    segs = _model(LINES).segments(_chat("u", "a", "q", "b"))
    assert segs == [Segment("user:u\nassistant:", False), Segment("a", True), Segment("\nuser:q\nassistant:", False),
                    Segment("b", True), Segment("\n", False)]


def test_answers_that_follow_each_other_without_markup_are_found():
    ex = Example(source="s", format="chat", messages=[
        {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}])
    assert _model(PLAIN).segments(ex) == [Segment("u", False), Segment("ab", True)]


@pytest.mark.parametrize("template, turns", [(OTHER_HEADER, ("u", "a")), (LAST_MARKED, ("u", "a", "q", "b")),
                                             (PLAIN, ("u", "  "))])
def test_answers_that_cannot_be_located_are_refused(template, turns):
    with pytest.raises(TemplateError) as info:
        _model(template).segments(_chat(*turns))
    assert str(info.value) == ("the model's chat template renders earlier turns differently once later turns "
                               "follow, so the answer cannot be located; use a template with {% generation %} "
                               "markers or chatml")


def test_model_template_keeps_its_system_prompt_and_knows_its_generation_markers():
    tok = build_tokenizer()  # ChatML with {% generation %} markers
    template = ModelTemplate(tok, system_prompt="S")
    assert template.system_prompt == "S" and template.has_generation_markers is True
    prompt = template.render_prompt("hi")
    assert prompt.startswith("<|im_start|>system\nS<|im_end|>") and prompt.endswith("<|im_start|>assistant\n")
    assert _model(LINES).has_generation_markers is False


def test_model_template_refuses_text_records_and_reports_template_errors():
    with pytest.raises(TemplateError) as info:
        _model(LINES).segments(Example(source="s", format="text", text="t"))
    assert str(info.value) == "text records have no turns; use format text (raw)"
    strict = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('a system turn first') }}{% endif %}"
    with pytest.raises(TemplateError) as info:
        _model(strict).render_prompt("hi")
    assert str(info.value) == "the model's chat template rejected this conversation: a system turn first"


# ---------------------------------------------------------------- records in each format

def test_alpaca_records_join_input_and_put_the_system_field_first(tmp_path):
    path = _file(tmp_path, [{"instruction": "I", "input": "X", "output": "O", "system": "S", "id": 1},
                            {"instruction": "I", "input": "  ", "output": "O"},
                            {"instruction": "I", "output": "O", "system": 5}])
    loaded = load_examples([path], "alpaca")
    first, second = loaded.examples
    assert first.messages == [{"role": "system", "content": "S"}, {"role": "user", "content": "I\n\nX"},
                              {"role": "assistant", "content": "O"}]
    assert first.fields == {"instruction": "I", "input": "X", "output": "O", "system": "S", "id": 1}
    assert second.messages == [{"role": "user", "content": "I"}, {"role": "assistant", "content": "O"}]
    assert loaded.problems == [f"{path}:3: expected a string, got a number (system)"]


def test_chat_records_messages_sharegpt_and_json_in_a_cell(tmp_path):
    msgs = [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    path = _file(tmp_path, [
        {"messages": msgs, "id": 1},
        {"conversations": [{"from": "human", "value": "u"}, {"from": "gpt", "value": "a"}], "id": 2},
        {"messages": "  " + json.dumps(msgs), "id": 3},
        {"messages": msgs, "conversations": "ignored", "id": 4}])
    loaded = load_examples([path], "chat")
    assert loaded.problems == []
    assert [e.messages for e in loaded.examples] == [msgs] * 4
    assert [e.fields for e in loaded.examples] == [{"id": 1}, {"id": 2}, {"id": 3}, {"id": 4}]
    assert {(e.format, e.source) for e in loaded.examples[:1]} == {("chat", f"{path}:1")}


def test_chat_record_problems_each_named_with_its_place(tmp_path):
    path = _file(tmp_path, [
        {"messages": "[not json"},
        {"messages": {"role": "user"}},
        {"messages": []},
        {"messages": ["hi", {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "u"}, {"role": "system", "content": "s"},
                      {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                      {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "user", "content": "u"}, {"role": "user", "content": "v"},
                      {"role": "system", "content": "s"}, {"role": "assistant", "content": "a"}]},
        {"messages": ["hi", {"content": "x"}, {"role": 5, "content": "y"}, {"role": "assistant", "content": "a"}]}])
    loaded = load_examples([path], "chat")
    assert len(loaded.examples) == 1 and loaded.examples[0].source == f"{path}:6"
    assert loaded.problems == [
        f"{path}:1: malformed JSON in the cell: Expecting value (messages)",
        f"{path}:2: expected a list of messages, got an object (messages)",
        f"{path}:3: empty conversation (messages)",
        f"{path}:4: expected an object with role and content, got a string (messages[0])",
        f"{path}:5: a system message must come first (messages[1].role)",
        f"{path}:7: a system message must come first (messages[2].role)",
        f"{path}:8: expected an object with role and content, got a string (messages[0])",  # and on: every turn
        f"{path}:8: missing field (messages[1].role)",
        f"{path}:8: expected a string, got a number (messages[2].role)"]


# ---------------------------------------------------------------- prompts from what generation has

def test_as_example_accepts_strings_message_lists_and_records():
    from lmtune.data.templates import as_example

    ex = as_example("hi")
    assert (ex.source, ex.format, ex.messages) == ("<prompt>", "chat", [{"role": "user", "content": "hi"}])
    assert ex.fields == {"instruction": "hi", "input": "", "prompt": "hi"}
    msgs = [{"role": "user", "content": "u"}]
    ex = as_example(msgs)
    assert (ex.source, ex.format, ex.messages) == ("<prompt>", "chat", msgs) and ex.messages[0] is not msgs[0]
    ex = as_example({"instruction": "I", "input": "X"})             # no answer yet: a stand-in
    assert (ex.source, ex.format, ex.fields["output"]) == ("<prompt>", "alpaca", "?")
    assert as_example({"prompt": "P"}).fields["completion"] == "?"
    ex = as_example({"conversations": [{"from": "human", "value": "u"}]})
    assert ex.prompt_messages() == [{"role": "user", "content": "u"}] and ex.response == "?"
    ex = as_example({"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]})
    assert ex.response == "a"                                        # an answer already there: kept
    ex = as_example({"conversations": [{"from": "human", "value": "u"}, {"from": "gpt", "value": "a"}]})
    assert ex.response == "a" and ex.prompt_messages() == [{"role": "user", "content": "u"}]
    assert as_example({"messages": [{"role": "user", "content": "u"}]}).response == "?"
    with pytest.raises(TemplateError) as info:
        as_example({"messages": []})
    assert str(info.value) == "<prompt>: empty conversation (messages)"
    with pytest.raises(TemplateError) as info:
        as_example({"foo": 1, "bar": 2})
    assert str(info.value) == "cannot tell the format of ['bar', 'foo']"
    with pytest.raises(TemplateError) as info:
        as_example({"instruction": "", "input": "X"})
    assert str(info.value) == "<prompt>: empty string (instruction)"
    with pytest.raises(TemplateError) as info:
        as_example({"messages": [{"role": "user", "content": ""}, {"role": "robot", "content": "x"}]})
    assert str(info.value) == ("<prompt>: empty string (messages[0].content); <prompt>: unknown role 'robot', "
                               "allowed: system, user, assistant (messages[1].role)")
    with pytest.raises(TemplateError) as info:
        as_example(42)
    assert str(info.value) == "cannot render a int as a prompt"


# ---------------------------------------------------------------- alpaca layout, template choice

def _alpaca_ex(**fields):
    return Example(source="s", format="alpaca", fields=fields,
                   messages=[{"role": "user", "content": fields["instruction"]},
                             {"role": "assistant", "content": fields.get("output", "")}])


def test_alpaca_system_comes_from_the_record_else_the_template():
    ex = _alpaca_ex(instruction="I", input="", output="O", system="S")
    assert AlpacaTemplate(system_prompt="T").render_prompt(ex) == "S\n\n### Instruction:\nI\n\n### Response:\n"
    ex = _alpaca_ex(instruction="I", input="X", output="O", system="")
    assert AlpacaTemplate(system_prompt="T").render_prompt(ex) == (
        "T\n\n### Instruction:\nI\n\n### Input:\nX\n\n### Response:\n")
    assert AlpacaTemplate().render_prompt(_alpaca_ex(instruction="I")) == "### Instruction:\nI\n\n### Response:\n"
    assert AlpacaTemplate().segments(_alpaca_ex(instruction="I")) == [
        Segment("### Instruction:\nI\n\n### Response:\n", False), Segment("", True)]  # no output: empty answer


def test_alpaca_renders_a_single_turn_chat_and_refuses_more():
    chat = Example(source="s", format="chat", messages=[
        {"role": "system", "content": "S"}, {"role": "user", "content": "U"}, {"role": "assistant", "content": "A"}])
    assert AlpacaTemplate(system_prompt="T").segments(chat) == [
        Segment("S\n\n### Instruction:\nU\n\n### Response:\n", False), Segment("A", True)]
    assert AlpacaTemplate(system_prompt="T").segments(_chat("U", "A")) == [
        Segment("T\n\n### Instruction:\nU\n\n### Response:\n", False), Segment("A", True)]
    assert AlpacaTemplate().render_prompt(chat) == "S\n\n### Instruction:\nU\n\n### Response:\n"
    with pytest.raises(TemplateError) as info:
        AlpacaTemplate().segments(_chat("U", "A", "V", "B"))
    assert str(info.value) == ("the alpaca template needs one user turn and one assistant answer, this "
                               "conversation has 4 turns; use template chatml or model")
    with pytest.raises(TemplateError) as info:
        AlpacaTemplate().segments(Example(source="s", format="text", text="t"))
    assert str(info.value) == "text records have no instruction/response; use format text (raw)"


def test_turns_after_the_last_answer_train_nothing():
    ex = Example(source="s", format="chat", messages=[{"role": "user", "content": "u"}, {"role": "user", "content": "v"}])
    assert ChatMLTemplate().segments(ex) == []


def test_template_choice_errors_and_the_system_prompt_of_the_models_template():
    from lmtune.data.templates import TEMPLATE_NAMES, get_template
    from lmtune.errors import ConfigError

    assert get_template("model", "chat", build_tokenizer(), system_prompt="S").system_prompt == "S"
    with pytest.raises(ConfigError) as info:
        get_template("model", "chat", build_tokenizer(chat_template=False))
    assert info.value.render() == ("error: data.template: got 'model', but the tokenizer has no chat template\n"
                                   "  allowed here: auto, alpaca, chatml (or use a model that ships a chat template)")
    with pytest.raises(ConfigError) as info:
        get_template("vicuna", "chat")
    assert info.value.render() == f"error: data.template: got 'vicuna', allowed: {', '.join(TEMPLATE_NAMES)}"
