"""lmtune/train/recipe.py's `_setup` and `_preflight_all_ranks`, called in-process on tiny real models: what
only a particular base, a resumed run with replay, or the device kind can show."""

from __future__ import annotations

import json

import lmtune.train.recipe as lt
from lmtune.config import load_config
from lmtune.models import detect_device
from lmtune.run.layout import RunDir
from tiny_models import build_tokenizer, model_config, save_tiny_model, write_alpaca


def _cfg(base, data, out, *extra):
    return load_config(None, [f"model.name_or_path={base}", f"data.train={data}", f"output.dir={out}",
                              "data.val_split=0.25", "data.test_size=0", "data.max_length=64",
                              "train.max_steps=2", "train.batch_size=2", "train.grad_accum=1",
                              "train.load_best=false", "output.report=false", "eval.after_train=false", *extra])


def _short_vocab_base(path):
    """A base whose embeddings stop 8 tokens short of its tokenizer and whose config names no pad
    token (as bases whose tokenizer gained tokens after training do)."""
    from transformers import AutoModelForCausalLM

    tok = build_tokenizer()
    cfg = model_config("llama", len(tok) - 8)
    cfg.eos_token_id = cfg.bos_token_id = tok.eos_token_id
    cfg.pad_token_id = None
    AutoModelForCausalLM.from_config(cfg).save_pretrained(str(path), safe_serialization=True)
    tok.save_pretrained(str(path))
    return path, len(tok), tok.pad_token_id


def test_setup_grows_the_embeddings_to_the_tokenizer_and_sets_its_pad_id(tmp_path):
    base, n_tokens, pad = _short_vocab_base(tmp_path / "base")
    cfg = _cfg(base, write_alpaca(tmp_path / "train.jsonl", 8), tmp_path / "run")
    s = lt._setup(cfg, RunDir(cfg.output.dir), resume=False)
    assert s.model.get_input_embeddings().num_embeddings == len(s.tokenizer) == n_tokens
    assert s.model.get_output_embeddings().out_features == n_tokens
    assert s.model.config.pad_token_id == s.tokenizer.pad_token_id == pad is not None


def test_resumed_setup_keeps_the_runs_replay_file_instead_of_drawing_again(tmp_path):
    """On --resume, the replay examples are the ones the run started with (RUN/replay.jsonl), never a
    new draw: a hand-written two-record file stands in for them (a fresh draw would be 4 bundled ones)."""
    base = save_tiny_model(tmp_path / "base", "llama")
    run = tmp_path / "run"
    run.mkdir()
    mine = [{"text": "replayed sentence number one."}, {"text": "and a second replayed sentence."}]
    (run / "replay.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mine))
    cfg = _cfg(base, write_alpaca(tmp_path / "train.jsonl", 12), run, "data.replay.ratio=0.5")
    s = lt._setup(cfg, RunDir(run), resume=True)
    assert s.data.stats["replay"]["examples"] == 2 and len(s.data.train) == 9 + 2
    assert [json.loads(line) for line in (run / "replay.jsonl").read_text().splitlines()] == mine
    tail = [s.tokenizer.decode(ids) for ids in s.data.train[-2:]["input_ids"]]
    assert [t.startswith(r["text"]) for t, r in zip(tail, mine)] == [True, True]


def test_setup_has_the_loaded_base_answer_for_self_replay(tmp_path):
    """data.replay.source=self: the base just loaded, on the run's device, answers bundled prompts
    greedily; those conversations join the training split."""
    from lmtune.tasks import ASSETS

    base = save_tiny_model(tmp_path / "base", "llama")
    cfg = _cfg(base, write_alpaca(tmp_path / "train.jsonl", 12), tmp_path / "run", "data.replay.ratio=0.25",
               "data.replay.source=self", "data.replay.max_new_tokens=4", "data.template=chatml",
               "data.max_length=256")   # room for a whole prompt and answer: no record is truncated away
    s = lt._setup(cfg, RunDir(cfg.output.dir), resume=False)
    used = [json.loads(line) for line in (tmp_path / "run" / "replay.jsonl").read_text().splitlines()]
    prompts = {json.loads(line)["prompt"] for line in (ASSETS / "general" / "replay_prompts.jsonl").open()}
    assert s.data.stats["replay"]["examples"] == len(used) == 2 and len(s.data.train) == 9 + 2
    assert all(r["messages"][0]["content"] in prompts and r["messages"][1]["content"].strip() for r in used)


def test_preflight_all_ranks_gives_the_device_kind_to_distributed_start(tmp_path):
    """One process: distributed.start derives grad_accum from rows_per_step with the device's default
    micro-batch (1 row on CPU, 4 on a GPU), so the kind it is given decides the result."""
    base = save_tiny_model(tmp_path / "base", "llama")
    cfg = _cfg(base, write_alpaca(tmp_path / "train.jsonl", 8), tmp_path / "run", "train.rows_per_step=8")
    cfg.train.batch_size = None   # the device's default micro-batch
    kind = detect_device().kind
    assert lt._preflight_all_ranks(cfg, RunDir(cfg.output.dir), False) == str(base)
    assert cfg.train.grad_accum == {"cpu": 8, "cuda": 2}[kind]
    assert not (tmp_path / "run").exists()
