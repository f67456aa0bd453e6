"""The catalogue task: deterministic files, v2 differs from v1 exactly where the test asks, and a
scorer that tells style from facts."""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

import pytest

from lmtune.tasks import get_task, task_files
from lmtune.tasks.catalogue import ANSWER_FORM, score_one

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))   # the build-time generators (scripts/task_gen/)
from task_gen import catalogue_gen  # noqa: E402
from task_gen.build import DEFAULT_SEED, build_catalogue  # noqa: E402


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.open(encoding="utf-8")]


def facts(docs: list[dict]) -> dict[str, tuple[str, str]]:
    """product name -> (price, days) read from the document text."""
    out = {}
    for doc in docs:
        name = re.search(r"^Product: (.+)$", doc["text"], re.M)[1]
        out[name] = (re.search(r"^Price: \$(\d+)$", doc["text"], re.M)[1],
                     re.search(r"^Delivery: (\d+) days$", doc["text"], re.M)[1])
    return out


def answer_facts(record: dict) -> tuple[str, tuple[str, str]]:
    m = ANSWER_FORM.fullmatch(record["messages"][-1]["content"])
    return m["product"], (m["price"], m["days"])


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a, b, c = build_catalogue(tmp_path / "a"), build_catalogue(tmp_path / "b"), build_catalogue(tmp_path / "c", 7)
    assert a == b
    assert a["catalogue/test.jsonl"]["sha256"] != c["catalogue/test.jsonl"]["sha256"]
    shipped = task_files("catalogue")
    assert a["catalogue/docs_v2.jsonl"]["sha256"] == _sha(shipped["docs_v2"])  # committed = regenerated
    assert DEFAULT_SEED == json.loads((ROOT / "src/lmtune/assets/tasks/manifest.json").read_text())["seed"]


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_v2_differs_from_v1_where_the_test_asks():
    files = task_files("catalogue")
    v1, v2 = facts(load(files["docs_v1"])), facts(load(files["docs_v2"]))
    test = load(files["test"])
    kinds = {r["kind"] for r in test}
    assert kinds == {"changed", "new"}
    for record in test:
        product, value = answer_facts(record)
        assert v2[product] == value                      # the answer is in the current docs
        if record["kind"] == "new":
            assert product not in v1
        else:                                            # both facts changed
            assert v1[product][0] != value[0] and v1[product][1] != value[1]
    changed = {answer_facts(r)[0] for r in test if r["kind"] == "changed"}
    unchanged = set(v1) - changed
    assert unchanged and all(v1[p] == v2[p] for p in unchanged)
    assert len(changed) == catalogue_gen.CHANGED and len(set(v2) - set(v1)) == catalogue_gen.NEW


def test_training_answers_come_from_v1_only():
    files = task_files("catalogue")
    v1 = facts(load(files["docs_v1"]))
    for split in ("train", "validation"):
        for record in load(files[split]):
            product, value = answer_facts(record)
            assert v1[product] == value and record["kind"] == "v1"
    train_answers = {r["messages"][-1]["content"] for r in load(files["train"])}
    assert not train_answers & {r["messages"][-1]["content"] for r in load(files["test"])}
    train_questions = {r["messages"][0]["content"] for r in load(files["train"])}
    assert not train_questions & {r["messages"][0]["content"] for r in load(files["validation"])}


def test_generate_is_a_function_of_the_rng():
    one = catalogue_gen.generate(random.Random("x"))
    assert one == catalogue_gen.generate(random.Random("x"))
    assert one != catalogue_gen.generate(random.Random("y"))


@pytest.mark.parametrize("prediction, expected", [
    ("The Orion Kettle costs $34 and ships in 5 days.", (1.0, 1.0, 1.0)),
    ("  The Orion Kettle costs $34  and ships in 5 days.\n", (1.0, 1.0, 1.0)),
    ("The Orion Kettle costs $35 and ships in 5 days.", (0.0, 1.0, 0.5)),     # right form, stale price
    ("The Orion Kettle costs $35 and ships in 6 days.", (0.0, 1.0, 0.0)),
    ("The Orion Lamp costs $34 and ships in 5 days.", (0.0, 1.0, 0.0)),       # another product's facts
    ("It costs $34 and ships in 5 days.", (0.0, 0.0, 0.0)),                   # facts, not the trained form
    ("", (0.0, 0.0, 0.0)),
])
def test_scorer_tells_style_from_facts(prediction, expected):
    row = score_one(prediction, "The Orion Kettle costs $34 and ships in 5 days.")
    assert (row["exact_match"], row["style"], row["fact_accuracy"]) == expected


def test_task_scores_chat_references_and_cuts_the_first_line():
    task = get_task("catalogue")
    ref = {"messages": [{"role": "user", "content": "q"},
                        {"role": "assistant", "content": "The Acme Rake costs $9 and ships in 3 days."}]}
    answer = task.extract_answer("\nThe Acme Rake costs $9 and ships in 3 days.\nThe Acme Rake costs")
    assert task.score([answer, "no idea"], [ref, ref]) == {"exact_match": 0.5, "style": 0.5, "fact_accuracy": 0.5}
    with pytest.raises(ValueError, match="answer form"):
        task.score(["x"], ["not a catalogue answer"])


def test_the_preset_retrieves_from_the_bundled_training_catalogue():
    from lmtune.config import load_config

    cfg = load_config(ROOT / "configs" / "tiny-catalogue-rag-full.yaml")
    assert cfg.data.task == "catalogue"
    assert Path(cfg.rag.docs).resolve() == task_files("catalogue")["docs_v1"].resolve()
    # evaluated (after train, and by `lmtune eval RUN`) with the catalogue as it is now
    assert Path(cfg.rag.eval_docs).resolve() == task_files("catalogue")["docs_v2"].resolve()
    assert cfg.eval.after_train
