"""Our tokenized data through TRL's own packing, collator and SFTTrainer preparation (TRL 1.16):
packed examples do not see each other, and completion_mask becomes labels = -100 on the prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

import tiny_tokenizers as tt
from data_reference import tokenize_examples
from lmtune.config import DataConfig
from lmtune.data import ensure_pad_token, get_template, prepare_datasets
from data_reference import load_examples

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
ALPACA_FILE = str(ROOT / "examples/data/alpaca.jsonl")


@pytest.fixture(scope="module")
def tokenizer():
    tok = tt.llama_style()
    assert ensure_pad_token(tok) is False  # reuses <unk>: no embedding resize needed
    return tok


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         use_cache=False, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


def _labels(ids: list[int], mask: list[int]) -> list[int]:
    return [t if m else -100 for t, m in zip(ids, mask)]


def test_packed_examples_do_not_attend_to_each_other(tokenizer, model):
    from datasets import Dataset
    from trl import pack_dataset

    examples = load_examples([ALPACA_FILE]).examples
    tok = tokenize_examples(examples[:2], get_template("alpaca", "alpaca"), tokenizer, 256)
    a, b = tok.input_ids
    assert len(a) != len(b)
    ds = Dataset.from_dict({"input_ids": [a, b], "labels": [_labels(i, m) for i, m in
                                                           zip(tok.input_ids, tok.completion_mask)]})
    packed = pack_dataset(ds, seq_length=len(a) + len(b) + 8, strategy="bfd")
    assert len(packed) == 1  # both fit in one row
    row = packed[0]
    first, second = (a, b) if row["seq_lengths"][0] == len(a) else (b, a)
    assert row["input_ids"] == first + second

    batch = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=True)([row])
    assert "attention_mask" not in batch
    assert batch["position_ids"][0].tolist() == list(range(len(first))) + list(range(len(second)))
    # labels: the prompt masked, and the first token of each packed example never predicted from the other
    labels = batch["labels"][0].tolist()
    assert labels[len(first)] == -100 and labels[0] == -100
    assert [x for x in labels if x != -100] == [x for x in row["labels"] if x != -100]

    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        together = model(**inputs).logits[0]
        alone_first = model(input_ids=torch.tensor([first])).logits[0]
        alone_second = model(input_ids=torch.tensor([second])).logits[0]
        naive = model(input_ids=batch["input_ids"]).logits[0]  # same row, no example boundaries
    torch.testing.assert_close(together[: len(first)], alone_first, atol=1e-5, rtol=0)
    torch.testing.assert_close(together[len(first):], alone_second, atol=1e-5, rtol=0)
    # control: without TRL's position ids the second example does see the first
    assert (naive[len(first):] - alone_second).abs().max() > 1e-3


def test_sft_trainer_builds_labels_from_completion_mask(tokenizer, model, tmp_path):
    """The contract train.py relies on: our columns in, TRL's labels out, packing keeps them."""
    from trl import SFTConfig, SFTTrainer

    data = prepare_datasets(DataConfig(train=[ALPACA_FILE], val_split=0.0, max_length=256), tokenizer)
    args = SFTConfig(output_dir=str(tmp_path), max_length=256, packing=True, completion_only_loss=True,
                     use_cpu=True, bf16=False, gradient_checkpointing=False, report_to=[],
                     per_device_train_batch_size=2)
    trainer = SFTTrainer(model=model, args=args, train_dataset=data.train, processing_class=tokenizer)
    ds = trainer.train_dataset
    assert set(ds.column_names) == {"input_ids", "labels", "seq_lengths"}
    expected = {tuple(r["input_ids"]): _labels(r["input_ids"], r["completion_mask"]) for r in data.train}
    seen = 0
    for row in ds:
        start = 0
        for length in row["seq_lengths"]:
            ids = tuple(row["input_ids"][start:start + length])
            assert row["labels"][start:start + length] == expected[ids]
            start += length
            seen += 1
    assert seen == len(data.train)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "position_ids" in batch and "attention_mask" not in batch
    assert (batch["labels"] != -100).sum() < (batch["input_ids"] != tokenizer.pad_token_id).sum()
