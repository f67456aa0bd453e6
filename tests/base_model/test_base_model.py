"""The shipped base model (src/lmtune/assets/base/tiny) and the script that builds it.

The model tests use plain transformers only (no lmtune code): what a user with nothing but
transformers would do with the directory. The build-helper tests check the properties the
base was designed for (copyable tokenization, deterministic corpus) without rebuilding it.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "src" / "lmtune" / "assets" / "base" / "tiny"
sys.path.insert(0, str(REPO / "scripts"))


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(TINY)


@pytest.fixture(scope="module")
def model():
    return AutoModelForCausalLM.from_pretrained(TINY)


def test_directory_is_complete_and_small():
    names = {p.name for p in TINY.iterdir()}
    for required in ("config.json", "generation_config.json", "model.safetensors",
                     "tokenizer.json", "tokenizer_config.json", "build_info.json", "README.md"):
        assert required in names
    total = sum(p.stat().st_size for p in TINY.iterdir())
    assert total <= 30 * 2**20, f"{total / 2**20:.1f} MiB committed; the limit is 30 MiB"


def test_config_is_a_small_tied_llama(model):
    cfg = model.config
    assert cfg.model_type == "llama" and cfg.tie_word_embeddings
    assert cfg.max_position_embeddings >= 1024
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    n = sum(p.numel() for p in model.parameters())
    assert 1e6 < n < 8e6
    assert model.dtype == torch.float32


def test_generates(model, tok):
    enc = tok("The library has books about", return_tensors="pt")
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out.shape == (1, enc["input_ids"].shape[1] + 5) or out.shape[1] < enc["input_ids"].shape[1] + 5
    assert out.shape[1] > enc["input_ids"].shape[1]


def test_special_tokens(model, tok):
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert tok.pad_token == "<|pad|>" and tok.eos_token == "<|endoftext|>"
    assert model.config.pad_token_id == tok.pad_token_id
    assert model.config.eos_token_id == tok.eos_token_id
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert set(model.generation_config.eos_token_id) == {tok.eos_token_id, im_end}
    for t in ("<|im_start|>", "<|im_end|>", "<|pad|>", "<|endoftext|>"):
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, f"{t} must be a single special token"


CHAT = [{"role": "system", "content": "You write SQL."},
        {"role": "user", "content": "How many books?"},
        {"role": "assistant", "content": "SELECT COUNT(*) FROM books;"},
        {"role": "user", "content": "And authors?"},
        {"role": "assistant", "content": "SELECT COUNT(*) FROM authors;"}]


def test_chat_template_renders_chatml(tok):
    text = tok.apply_chat_template(CHAT[:2], tokenize=False, add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou write SQL.<|im_end|>\n"
                    "<|im_start|>user\nHow many books?<|im_end|>\n<|im_start|>assistant\n")
    no_prompt = tok.apply_chat_template(CHAT[:2], tokenize=False)
    assert not no_prompt.endswith("<|im_start|>assistant\n")
    full = tok.apply_chat_template(CHAT, tokenize=False)
    assert full.endswith("<|im_start|>assistant\nSELECT COUNT(*) FROM authors;<|im_end|>\n")


def test_generation_markers_give_assistant_mask(tok):
    enc = tok.apply_chat_template(CHAT, tokenize=True, return_dict=True,
                                  return_assistant_tokens_mask=True)
    ids, mask = enc["input_ids"], enc["assistant_masks"]
    assert len(ids) == len(mask) and 0 < sum(mask) < len(mask)
    # the masked tokens are exactly the two replies, each with its closing <|im_end|>
    masked = tok.decode([i for i, m in zip(ids, mask) if m])
    assert masked == "SELECT COUNT(*) FROM books;<|im_end|>SELECT COUNT(*) FROM authors;<|im_end|>"
    # and the rendered chat round-trips through the tokenizer
    assert tok.decode(ids) == tok.apply_chat_template(CHAT, tokenize=False)


@pytest.mark.parametrize("text", [
    "Hello, world!  Two spaces,\ttab and\nnewline.",
    "SELECT name FROM authors WHERE country = 'Norway' AND birth_year > 1950;",
    '{"pet_name": "Zokkas", "age_years": 7, "owner": null}',
    "def f(x):\n    return x ** 2  # square\n",
    "Ünïcödé, 日本語, emoji 🙂, and \u00a0non-breaking space.",
    "   leading and trailing spaces   ",
])
def test_round_trip(tok, text):
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text


def _contains(seq: list[int], sub: list[int]) -> bool:
    return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


@pytest.mark.parametrize("word", ["Berlin", "1999", "Oslo", "Ada Lovelace", "Zyxquor"])
def test_entities_tokenize_the_same_in_prose_and_in_sql(tok, word):
    alone = tok(word, add_special_tokens=False)["input_ids"]
    prose = tok(f"Which authors were born in {word} in 1999 or later?",
                add_special_tokens=False)["input_ids"]
    sql = tok(f"SELECT name FROM authors WHERE city = '{word}' AND year = 1999",
              add_special_tokens=False)["input_ids"]
    js = tok(f'{{"city": "{word}"}}', add_special_tokens=False)["input_ids"]
    assert _contains(prose, alone) and _contains(sql, alone) and _contains(js, alone)


def test_years_are_digit_tokens(tok):
    ids = tok("in 1999,", add_special_tokens=False)["input_ids"]
    assert [tok.decode([i]) for i in ids] == ["in", " ", "1", "9", "9", "9", ","]


def test_common_english_words_are_whole_tokens(tok):
    words = ("the because people between important different should which their after "
             "before through water number example returns argument default value").split()
    split = [w for w in words if len(tok(w, add_special_tokens=False)["input_ids"]) != 1]
    assert not split, f"fragmented: {split}"


def test_build_info_records_the_recipe(model):
    info = json.loads((TINY / "build_info.json").read_text())
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert info["seed"] == 0 and info["command"].startswith("python scripts/build_base.py")
    ppl = info["heldout_perplexity"]
    assert math.isfinite(ppl["all"]) and 1 < ppl["all"] < 1e4
    assert info["tokens_seen"] > 0 and info["schedule"]["steps"] > 0
    assert set(info["data"]["train_tokens"]) == {"stdlib", "text", "sql", "json"}
    assert "total_s" in info["wall_time_s"] and info["device"]["type"] in ("cpu", "cuda")
    assert (TINY / "README.md").read_text().count(str(ppl["all"])) >= 1


# --- the build script's parts -------------------------------------------------------------

def test_pre_tokenizer_isolates_words_from_spaces_and_quotes():
    from base import tokenizer as T
    raw = T.train(["in Berlin in 1999", "city = 'Berlin'"] * 50, vocab_size=400)
    pieces = [p for p, _ in raw.pre_tokenizer.pre_tokenize_str("x = 'Berlin' in 1999")]
    assert pieces == ["x", "Ġ", "=", "Ġ", "'", "Berlin", "'", "Ġ", "in", "Ġ", "1", "9", "9", "9"]


def test_generated_corpus_is_deterministic_and_avoids_the_bundled_schema():
    from base import corpus
    chunk = corpus.Chunk("sql", 3, False)
    a, b = corpus.synth_chunk(7, chunk), corpus.synth_chunk(7, chunk)
    assert a == b and a != corpus.synth_chunk(8, chunk)
    text = json.dumps([corpus.synth_chunk(0, corpus.Chunk(k, 0, False))
                       for k in corpus.SYNTH_KINDS]).lower()
    tables = set(re.findall(r"\b(?:from|join) (\w+)", text))
    assert {"books", "sensors", "flights"} <= tables
    # the bundled task's tables and the fine-tuning check's tables never appear in pretraining
    assert not tables & {"customers", "orders", "hotels", "guests"}


def test_heldout_split_is_disjoint():
    from base import corpus
    plan = corpus.plan_chunks(100_000)
    train = {(c.kind, c.index) for c in plan if not c.heldout}
    held = {(c.kind, c.index) for c in plan if c.heldout}
    assert held and not train & held
    assert all(i < 0 for _, i in held)


def test_finecheck_pairs_are_unique_and_unseen_schema():
    from base import finecheck
    train, evals = finecheck.make_pairs(0, 40, 10)
    prompts = [r["messages"][0]["content"] for r in train + evals]
    assert len(set(prompts)) == len(prompts)
    assert all(("hotels" in p) for p in prompts)


@pytest.mark.slow
def test_smoke_build_end_to_end(tmp_path, monkeypatch):
    import build_base
    from base import stdlib_text
    # one stdlib package (asyncio: a few hundred real docstrings, one held-out file) instead of the
    # whole stdlib: every stage still runs on real text; the stdlib's size only costs time here
    package = stdlib_text.stdlib_root() / "asyncio"
    monkeypatch.setattr(stdlib_text, "stdlib_root", lambda: package)
    out = tmp_path / "model"
    assert build_base.main(["--smoke", "--out", str(out), "--work", str(tmp_path / "work"),
                            "--tokens", "2048", "--workers", "1"]) == 0
    m = AutoModelForCausalLM.from_pretrained(out)
    t = AutoTokenizer.from_pretrained(out)
    assert t.pad_token_id != t.eos_token_id
    assert json.loads((out / "build_info.json").read_text())["tokens_seen"] >= 1024
    assert m(**t("hi", return_tensors="pt")).logits.shape[-1] == len(t)
