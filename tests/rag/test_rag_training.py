"""Retrieval-augmented fine-tuning: with rag.docs set, each training prompt carries its passages,
rendered as inference renders them, and only the answer is trained (TRL's labels -100 elsewhere)."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from lmtune.config import DataConfig, RagConfig
from lmtune.data import ensure_pad_token, prepare_datasets
from lmtune.data.templates import get_template
from lmtune.models import open_tokenizer
from lmtune.rag.prompt import augment_item
from lmtune.rag.training import training_passages
from lmtune.tasks import task_files

FILES = task_files("catalogue")
TOP_K = 3


@pytest.fixture(scope="module")
def tokenizer():
    tok = open_tokenizer("tiny")
    ensure_pad_token(tok)
    return tok


def data_cfg(tmp_path, n: int = 60, **kw) -> DataConfig:
    """The first n catalogue training questions as the training file; no validation split."""
    lines = FILES["train"].read_text().splitlines()[:n]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return DataConfig(train=[str(path)], val_split=0.0, test_size=0, max_length=512, template="chatml", **kw)


def rag_cfg(docs=FILES["docs_v1"], **kw) -> RagConfig:
    return RagConfig(docs=str(docs), top_k=TOP_K, chunk_tokens=256, **kw)


def split_row(tokenizer, row) -> tuple[str, str]:
    ids, mask = row["input_ids"], row["completion_mask"]
    prompt = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
    answer = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    return prompt, answer


def records(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]


def product(record: dict) -> str:
    return re.match(r"The (.+?) costs", record["messages"][-1]["content"])[1]


def test_prompts_carry_the_gold_passage_and_only_the_answer_is_trained(tokenizer, tmp_path):
    cfg, rag = data_cfg(tmp_path), rag_cfg()
    augment = training_passages(rag, tokenizer)
    data = prepare_datasets(cfg, tokenizer, augment=augment)
    rows, recs = data.train.to_list(), records(tmp_path)
    assert len(rows) == len(recs) and data.stats["augment"]["top_k"] == TOP_K
    template = get_template("chatml", "chat", tokenizer)
    same_as_inference = 0
    for row, rec in zip(rows, recs):
        prompt, answer = split_row(tokenizer, row)
        assert answer == rec["messages"][-1]["content"] + "<|im_end|>" + tokenizer.eos_token
        assert f"Product: {product(rec)}\n" in prompt                  # the gold passage
        assert len(re.findall(r"^\[\d\] \(", prompt, re.M)) == TOP_K
        assert prompt.rstrip().endswith(f"Question: {rec['messages'][0]['content']}<|im_end|>\n<|im_start|>assistant")
        # where the search already ranks the gold passage in its top k, the prompt is the inference prompt
        inference, found = augment_item(rec, lambda q: augment.retriever.search(q, TOP_K))
        if any(p.id == product(rec).lower().replace(" ", "-") for p in found):
            assert prompt == template.render_prompt(inference)
            same_as_inference += 1
    assert same_as_inference > len(rows) // 2


def test_trl_labels_mask_the_passages(tokenizer, tmp_path):
    """TRL's own preparation of our columns: labels -100 on every prompt token, passages included."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    data = prepare_datasets(data_cfg(tmp_path, n=8), tokenizer, augment=training_passages(rag_cfg(), tokenizer))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                         max_position_embeddings=512, pad_token_id=tokenizer.pad_token_id))
    args = SFTConfig(output_dir=str(tmp_path / "out"), max_length=512, packing=False, completion_only_loss=True,
                     use_cpu=True, bf16=False, gradient_checkpointing=False, report_to=[])
    ds = SFTTrainer(model=model, args=args, train_dataset=data.train, processing_class=tokenizer).train_dataset
    for row, ours in zip(ds, data.train):
        trained = [t for t, lab in zip(row["input_ids"], row["labels"]) if lab != -100]
        assert [lab for lab in row["labels"] if lab != -100] == trained
        assert trained == [t for t, m in zip(ours["input_ids"], ours["completion_mask"]) if m]
        prompt_text = tokenizer.decode([t for t, lab in zip(row["input_ids"], row["labels"]) if lab == -100])
        assert "Passages:" in prompt_text and "Price: $" in prompt_text


def test_train_gold_share_and_determinism(tokenizer, tmp_path):
    cfg = data_cfg(tmp_path)
    recs = records(tmp_path)

    def gold_seen(rag: RagConfig) -> list[bool]:
        rows = prepare_datasets(cfg, tokenizer, augment=training_passages(rag, tokenizer)).train.to_list()
        return [f"Product: {product(r)}\n" in split_row(tokenizer, row)[0] for row, r in zip(rows, recs)]

    assert not any(gold_seen(rag_cfg(train_gold=0.0)))
    half = gold_seen(rag_cfg(train_gold=0.5))
    assert 0.3 < sum(half) / len(half) < 0.7
    assert gold_seen(rag_cfg(train_gold=0.5)) == half                 # same seed, same draw
    assert gold_seen(rag_cfg(train_gold=0.5, seed=7)) != half         # another seed, other examples


def test_docs_and_settings_key_the_cache(tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("LMTUNE_CACHE_DIR", str(tmp_path / "cache"))
    cfg = dataclasses.replace(data_cfg(tmp_path, n=20), cache=True)
    plain = prepare_datasets(cfg, tokenizer).train["input_ids"]
    v1 = prepare_datasets(cfg, tokenizer, augment=training_passages(rag_cfg(), tokenizer)).train["input_ids"]
    again = prepare_datasets(cfg, tokenizer, augment=training_passages(rag_cfg(), tokenizer)).train["input_ids"]
    v2 = prepare_datasets(cfg, tokenizer,
                          augment=training_passages(rag_cfg(FILES["docs_v2"]), tokenizer)).train["input_ids"]
    assert v1 == again and v1 != plain and v2 != v1
    assert all(len(a) > len(b) for a, b in zip(v1, plain))


def test_grpo_prompts_carry_the_same_passages_as_sft_and_keep_their_references(tokenizer, tmp_path):
    from lmtune.rl.prompts import prepare_prompts

    cfg, rag = data_cfg(tmp_path, n=20), rag_cfg()
    template = get_template("chatml", "chat", tokenizer)
    plain = prepare_prompts(cfg, lambda fmt: template)
    data = prepare_prompts(cfg, lambda fmt: template, training_passages(rag, tokenizer))
    sft = prepare_datasets(cfg, tokenizer, augment=training_passages(rag, tokenizer))
    recs = records(tmp_path)
    assert data.stats["augment"]["top_k"] == TOP_K and "augment" not in plain.stats
    assert data.train["reference"] == plain.train["reference"] == [r["messages"][-1]["content"] for r in recs]
    for prompt, bare, row, rec in zip(data.train["prompt"], plain.train["prompt"], sft.train.to_list(), recs):
        assert f"Product: {product(rec)}\n" in prompt and "Product:" not in bare
        assert len(re.findall(r"^\[\d\] \(", prompt, re.M)) == TOP_K
        assert tokenizer(prompt, add_special_tokens=False)["input_ids"] == \
            [t for t, m in zip(row["input_ids"], row["completion_mask"]) if not m]   # SFT's very prompt


@pytest.mark.parametrize("objective", ["dpo", "orpo", "kto"])
def test_preference_objectives_refuse_rag_docs(objective):
    from lmtune.config import load_config
    from lmtune.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config(None, [f"train.objective={objective}", f"rag.docs={FILES['docs_v1']}", "data.task=sql",
                           "train.batch_size=2"])
    assert any(p.startswith("rag.docs: train.objective " + objective) for p in err.value.problems)
    load_config(None, ["train.objective=grpo", f"rag.docs={FILES['docs_v1']}", "data.task=sql",
                       "train.batch_size=4"])   # grpo retrieves for each prompt: allowed
