"""data.replay: general examples enter the training split (and only it), from the bundled general
set (disjoint from the forgetting probe), the base model's own answers, or a user's file."""

from __future__ import annotations

import json
import re

import pytest
from transformers import TrainerCallback

from lmtune.config import load_config
from lmtune.errors import ConfigError
from lmtune.tasks import ASSETS
from lmtune.train.recipe import train
from tiny_models import save_tiny_model, write_alpaca


def _sentences(text):
    return {s.strip() for s in re.split(r"(?<=[.!?])\s+", text) if len(s.strip()) > 20}


def _jsonl(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_bundled_replay_set_shares_nothing_with_the_probe():
    probe = _jsonl(ASSETS / "general" / "probe.jsonl")
    replay = _jsonl(ASSETS / "general" / "replay.jsonl")
    assert len(replay) >= 500 and len(_jsonl(ASSETS / "general" / "replay_prompts.jsonl")) >= 200
    probe_s = set().union(*(_sentences(p["text"]) for p in probe))
    assert not probe_s & set().union(*(_sentences(r["text"]) for r in replay))
    assert not {p["text"] for p in probe} & {r["text"] for r in replay}


class _Tokens(TrainerCallback):
    """Tokens the Trainer really trains on and evaluates on (after TRL's packing)."""

    def on_train_begin(self, args, state, control, train_dataloader=None, eval_dataloader=None, **kw):
        count = lambda ds: sum(len(x) for x in ds["input_ids"])  # noqa: E731
        self.train = count(train_dataloader.dataset)
        self.eval = count(eval_dataloader.dataset) if eval_dataloader is not None else None


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    return root, save_tiny_model(root / "base", "llama"), write_alpaca(root / "train.jsonl", 40)


def _run(tiny, name, *extra):
    root, base, data = tiny
    cfg = load_config(None, [f"model.name_or_path={base}", f"data.train={data}", f"output.dir={root / name}",
                             "data.val_split=0.2", "data.test_size=0", "data.max_length=96", "data.template=chatml",
                             "train.max_steps=1", "train.batch_size=2", "train.grad_accum=1",
                             "train.eval_steps=1", "train.load_best=false", "output.report=false",
                             "eval.after_train=false", *extra])
    tokens = _Tokens()
    train(cfg, quiet=True, callbacks=[tokens])
    stats = json.loads((root / name / "data_stats.json").read_text())
    return tokens, stats, root / name


def test_general_replay_goes_into_training_only(tiny):
    plain, plain_stats, _ = _run(tiny, "plain")
    mixed, stats, run = _run(tiny, "general", "data.replay.ratio=0.5")
    assert stats["examples"] == plain_stats["examples"] == {"train": 32, "validation": 8}
    assert stats["replay"]["examples"] == 16 and stats["replay"]["source"] == "general"
    assert mixed.train - plain.train == stats["replay"]["tokens"] > 0   # trained on, every token
    assert mixed.eval == plain.eval                                      # validation untouched
    bundled = {r["text"] for r in _jsonl(ASSETS / "general" / "replay.jsonl")}
    used = _jsonl(run / "replay.jsonl")
    assert len(used) == 16 and all(r["text"] in bundled for r in used)


def test_self_replay_is_the_base_models_own_greedy_answers(tiny):
    from lmtune.generate import GenerationSettings, Generator

    _, stats, run = _run(tiny, "self", "data.replay.ratio=0.25", "data.replay.source=self",
                         "data.replay.max_new_tokens=6")
    used = _jsonl(run / "replay.jsonl")
    assert stats["replay"]["examples"] == len(used) > 0
    prompts = {json.loads(line)["prompt"] for line in (ASSETS / "general" / "replay_prompts.jsonl").open()}
    first = used[0]["messages"]
    assert first[0]["content"] in prompts
    # the same answer from the untouched base, through the run's template
    gen = Generator.load(str(tiny[1]))
    from lmtune.data.templates import template_from_dict

    gen.template = template_from_dict(json.loads((run / "template.json").read_text()), gen.tokenizer)
    again = gen.generate([first[0]["content"]], GenerationSettings(max_new_tokens=6, greedy=True))
    assert again == [first[1]["content"]]


def test_replay_from_a_user_file_and_a_missing_file(tiny, tmp_path):
    extra = tmp_path / "general.jsonl"
    extra.write_text("".join(json.dumps({"instruction": f"Say hello {i}", "output": f"Hello {i}!"}) + "\n"
                             for i in range(5)))
    _, stats, run = _run(tiny, "file", "data.replay.ratio=0.25", f"data.replay.source={extra}")
    used = _jsonl(run / "replay.jsonl")
    assert stats["replay"]["examples"] == 8 and len(used) == 8       # the 5 records, drawn again when used up
    assert {u["messages"][-1]["content"] for u in used} <= {f"Hello {i}!" for i in range(5)}
    with pytest.raises(ConfigError) as err:
        load_config(None, ["data.task=sql", "data.replay.ratio=0.1", f"data.replay.source={tmp_path / 'nope.jsonl'}"])
    assert "data.replay.source" in err.value.problems[0]
