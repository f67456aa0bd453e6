"""JSON-extraction metric: valid, partial and invalid answers."""

from __future__ import annotations

import json

import pytest

from lmtune.tasks import get_task
from lmtune.tasks.json_extract import extract_json

REF = {"name": "Maria Lopez", "age": 34, "city": "Lisbon", "product": "green tea", "quantity": 3}


@pytest.fixture(scope="module")
def task():
    return get_task("json")


def chat(answer: dict) -> dict:
    return {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                         {"role": "assistant", "content": json.dumps(answer)}]}


def one(task, pred: str, ref: dict = REF) -> dict[str, float]:
    return task.score([pred], [chat(ref)])


def test_right_answer_scores_one_in_any_spacing(task):
    full = {"valid_json": 1.0, "field_accuracy": 1.0, "exact_match": 1.0}
    assert one(task, json.dumps(REF)) == full
    assert one(task, json.dumps(REF, separators=(",", ":"), indent=2)) == full
    reordered = dict(reversed(list(REF.items())))
    assert one(task, json.dumps(reordered)) == full


def test_partial_answers_get_field_credit(task):
    wrong_city = dict(REF, city="Porto")
    assert one(task, json.dumps(wrong_city)) == {"valid_json": 1.0, "field_accuracy": 0.8, "exact_match": 0.0}
    missing = {k: v for k, v in REF.items() if k != "age"}
    assert one(task, json.dumps(missing))["field_accuracy"] == 0.8
    as_strings = dict(REF, age="34", quantity=3.0)  # right digits, wrong JSON types
    assert one(task, json.dumps(as_strings))["field_accuracy"] == pytest.approx(0.6)
    extra = dict(REF, email="m@example.org")
    assert one(task, json.dumps(extra)) == {"valid_json": 1.0, "field_accuracy": 1.0, "exact_match": 0.0}


def test_null_fields_must_be_null(task):
    ref = dict(REF, age=None)
    assert one(task, json.dumps(ref), ref)["exact_match"] == 1.0
    assert one(task, json.dumps(dict(ref, age=0)), ref)["field_accuracy"] == 0.8
    assert one(task, json.dumps({k: v for k, v in ref.items() if k != "age"}), ref)["field_accuracy"] == 0.8


@pytest.mark.parametrize("pred", ["", "name: Maria Lopez", '{"name": "Maria Lopez", "age": 34',
                                  json.dumps([REF]), "34", "null", "{'name': 'Maria Lopez'}"])
def test_invalid_or_non_object_scores_zero(task, pred):
    assert one(task, pred) == {"valid_json": 0.0, "field_accuracy": 0.0, "exact_match": 0.0}


def test_mean_over_examples(task):
    preds = [json.dumps(REF), "not json", json.dumps(dict(REF, name="Ana"))]
    scores = task.score(preds, [chat(REF)] * 3)
    assert scores["valid_json"] == pytest.approx(2 / 3)
    assert scores["field_accuracy"] == pytest.approx((1 + 0 + 0.8) / 3)
    assert scores["exact_match"] == pytest.approx(1 / 3)


def test_extract_answer_finds_the_first_object():
    obj = json.dumps(REF)
    assert extract_json(f"Sure! {obj}\nanything else") == obj
    assert extract_json(f"{obj} {json.dumps({'x': 1})}") == obj
    tricky = json.dumps({"name": "a } b {", "age": 1})
    assert extract_json(f"x {{ broken {tricky}") == tricky
    assert extract_json('{"name": "Maria", "age"\nrest') == '{"name": "Maria", "age"'
    assert extract_json("no object here\nsecond line") == "no object here"


def test_gold_answers_score_one_and_use_the_schema(task):
    records = [json.loads(line) for line in task.files["test"].open(encoding="utf-8")]
    answers = [task.extract_answer(task.reference(r)) for r in records]
    assert task.score(answers, records) == {"valid_json": 1.0, "field_accuracy": 1.0, "exact_match": 1.0}
    for r in records:
        roles = [m["role"] for m in r["messages"]]
        assert roles == ["system", "user", "assistant"]
        obj = json.loads(r["messages"][2]["content"])
        assert list(obj) == ["name", "age", "city", "product", "quantity"]
        sentence = r["messages"][1]["content"]
        for value in obj.values():  # every value is copied verbatim from the sentence
            assert value is None or str(value) in sentence
