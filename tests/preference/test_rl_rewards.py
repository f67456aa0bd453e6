"""GRPO's rewards on real data: the SQL task reward runs queries on the bundled SQLite database
(full, partial, zero credit), JSON by fields, other data exact match or ROUGE-L; format and
length; the user's own function loaded from a file, and each way that can fail."""

from __future__ import annotations

import pytest

from lmtune.config import load_config
from lmtune.data.templates import get_template
from lmtune.errors import ConfigError
from lmtune.rl.rewards import TaskRewards, load_user_function, reward_functions

GOLD = "SELECT name FROM customers WHERE city = 'Berlin'"


def _sql(max_new_tokens=64):
    return TaskRewards("sql", get_template("alpaca", "alpaca"), max_new_tokens)


def test_sql_task_reward_full_partial_and_zero_credit_by_execution():
    r = _sql()
    right = "SELECT c.name FROM customers c WHERE c.city = 'Berlin'"        # other text, same rows
    partial = "SELECT name FROM customers WHERE city IN ('Berlin', 'Paris')"  # the rows and more
    wrong = "SELECT name FROM customers WHERE city = 'Atlantis'"            # runs, no rows
    broken = "SELEC name FROM"
    write = "DELETE FROM customers"
    scores = r.score([right, partial, wrong, broken, write], [GOLD] * 5)
    assert scores[0] == 1.0
    assert 0.0 < scores[1] < 0.5          # half the F1: never as good as a right answer
    assert scores[2:] == [0.0, 0.0, 0.0]


def test_sql_reward_gives_half_credit_for_the_right_rows_in_the_wrong_order():
    gold = "SELECT name FROM products ORDER BY price DESC"
    assert _sql().score(["SELECT name FROM products ORDER BY price ASC"], [gold]) == [0.5]


def test_sql_reward_cuts_at_the_templates_stop_and_takes_the_first_line():
    completion = GOLD + "\n\n### Instruction:\nsomething else"
    assert _sql().score([completion], [GOLD]) == [1.0]


def test_format_is_zero_when_sampling_hit_the_token_limit_and_length_costs_extra_text():
    r = _sql(max_new_tokens=5)
    fmt = r.reward_format([GOLD, GOLD, "SELEC x"], [GOLD] * 3, completion_ids=[[1, 2], [1] * 5, [1]])
    assert fmt == [1.0, 0.0, 0.0]
    length = r.reward_length([GOLD, GOLD + " " + "x" * (2 * len(GOLD))], [GOLD] * 2)
    assert length == [0.0, -1.0]


def test_json_reward_is_field_accuracy_and_other_data_exact_match_or_rouge():
    chatml = get_template("chatml", "chat")
    js = TaskRewards("json", chatml, 64)
    ref = '{"a": 1, "b": "x"}'
    assert js.score(['{"a": 1, "b": "y"}', "no json"], [ref, ref]) == [0.5, 0.0]
    exact = TaskRewards(None, chatml, 64)
    assert exact.score(["the cat sat", "the cat"], ["the cat sat"] * 2) == [1.0, 0.0]
    rouge = TaskRewards(None, chatml, 64, "rouge_l")
    assert 0.5 < rouge.score(["the cat"], ["the cat sat"])[0] < 1.0


def test_catalogue_reward_is_fact_accuracy_and_format_the_trained_sentence():
    """The catalogue's own partial credit (each of price and delivery right for the right product),
    whatever rl.text_metric says (it is for data without a bundled task: rouge_l was a KeyError)."""
    chatml = get_template("chatml", "chat")
    ref = "The Orion Lamp costs $65 and ships in 6 days."
    answers = [ref, "The Orion Lamp costs $65 and ships in 9 days.", "The Orion Desk costs $65 and ships in 6 days.",
               "It costs $65."]
    for text_metric in ("exact_match", "rouge_l"):
        cat = TaskRewards("catalogue", chatml, 64, text_metric)
        assert cat.score(answers, [ref] * 4) == [1.0, 0.5, 0.0, 0.0]
        assert cat.reward_format(answers, [ref] * 4) == [1.0, 1.0, 1.0, 0.0]


def _cfg(tmp_path, rewards, *extra):
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "q", "output": "a"}\n')
    return load_config(None, [f"data.train={data}", "train.objective=grpo", f"rl.reward={rewards}", *extra])


def test_user_reward_function_is_loaded_from_the_named_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_rewards.py").write_text(
        "def short(prompts, completions, **kw):\n    return [-len(c) for c in completions]\n")
    fns = reward_functions(_cfg(tmp_path, "[task, my_rewards.py:short]"), get_template("chatml", "chat"))
    assert [f.__name__ for f in fns] == ["task", "short"]
    assert fns[1](prompts=["p", "p"], completions=["ab", "abcd"], reference=["x", "x"]) == [-2, -4]


@pytest.mark.parametrize("content, spec, expected", [
    (None, "missing.py:f", "rl.reward[0]: missing.py: no such file"),
    ("def g(prompts, completions, **kw):\n    return []\n", "r.py:f", "rl.reward[0]: r.py has no function 'f'"),
    ("x = 1\ndef f(:\n", "r.py:f", "rl.reward[0]: r.py:2: syntax error"),
    ("import os\nraise RuntimeError('no key')\n", "r.py:f",
     "rl.reward[0]: r.py:2: importing it raised RuntimeError: no key"),
    (None, "r.txt:f", "rl.reward[0]: got 'r.txt:f'"),
])
def test_user_reward_errors_name_the_key_and_the_file(tmp_path, monkeypatch, content, spec, expected):
    monkeypatch.chdir(tmp_path)
    if content is not None:
        (tmp_path / "r.py").write_text(content)
    with pytest.raises(ConfigError) as err:
        load_user_function(spec, "rl.reward[0]")
    assert err.value.args[0].startswith(expected)
    if "no function" in expected:
        assert "functions defined there: g" in err.value.render()


@pytest.mark.parametrize("overrides, expected", [
    (["rl.reward=[task, score]"], "rl.reward[1]: got 'score'"),
    (["rl.reward=[]"], "rl.reward: empty"),
    (["rl.reward_weights=[1.0]", "rl.reward=[task, format]"], "rl.reward_weights: 1 weights for 2 rewards"),
    (["train.batch_size=6"], "train.batch_size: got 6; under grpo it counts sampled answers"),
    (["rl.num_generations=1"], "rl.num_generations"),
])
def test_rl_config_errors_name_the_key(tmp_path, overrides, expected):
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "q", "output": "a"}\n')
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"data.train={data}", "train.objective=grpo", *overrides])
    assert expected in err.value.render()


def test_train_with_a_missing_reward_file_stops_before_the_run_directory(tmp_path, monkeypatch):
    from lmtune.train.recipe import train

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    cfg = _cfg(tmp_path, "[task, nowhere.py:f]", "model.name_or_path=tiny", f"output.dir={out}")
    with pytest.raises(ConfigError) as err:
        train(cfg, quiet=True)
    assert err.value.args[0] == "rl.reward[1]: nowhere.py: no such file"
    assert not out.exists()
