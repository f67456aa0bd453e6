"""The automatic validation split is capped (holdout.VAL_MAX), the data line says so, and a
validation file the user gives is never cut. The cap is lowered for the pipeline tests so that a
few hundred records reach it; the split function is also checked at the real cap and scale."""

from __future__ import annotations

import pytest
from data_reference import assert_same_prepared, reference_prepare

import tiny_tokenizers as tt
from lmtune.config import DataConfig
from lmtune.data import holdout
from lmtune.data.holdout import VAL_MAX, split_train_validation, validation_size
from lmtune.data.prepare import prepare_datasets, summary_line
from tiny_models import write_alpaca


def test_the_real_cap_holds_at_scale_and_draws_a_subset_of_the_uncapped_split():
    positions = list(range(100_000))
    train, val = split_train_validation(positions, 0.05, seed=3)
    assert len(val) == VAL_MAX == 2000 and len(train) == 98_000
    _, uncapped = split_train_validation(positions, 0.05, seed=3, cap=None)
    assert len(uncapped) == 5000 and set(val) <= set(uncapped)
    assert validation_size(100_000, 0.05) == 2000 and validation_size(10_000, 0.05) == 500
    assert validation_size(3, 0.9, cap=1) == 1 and validation_size(1, 0.5) == 0


@pytest.fixture
def small_cap(monkeypatch):
    monkeypatch.setattr(holdout, "VAL_MAX", 10)


def test_automatic_split_is_capped_and_the_data_line_says_so(tmp_path, small_cap):
    data = write_alpaca(tmp_path / "train.jsonl", 300)
    cfg = DataConfig(train=[str(data)], template="alpaca", val_split=0.1, cache=False)
    tokenizer = tt.gpt2_style()
    prepared = prepare_datasets(cfg, tokenizer)
    # 300 records - 30 held out for the test split = 270; 10% would be 27
    assert len(prepared.validation) == 10 and len(prepared.train) == 260
    assert prepared.stats["split"] == {"val_split": 0.1, "seed": 42, "max_examples": 10, "capped": True}
    assert summary_line(prepared.stats) == ("data: 300 training records -> 260 training examples, "
                                            "10 validation (10% of the data, capped at 10)")
    assert_same_prepared(prepared, reference_prepare(cfg, tokenizer))


def test_a_split_under_the_cap_says_its_bound(tmp_path):
    data = write_alpaca(tmp_path / "train.jsonl", 60)
    prepared = prepare_datasets(DataConfig(train=[str(data)], template="alpaca", cache=False), tt.gpt2_style())
    assert summary_line(prepared.stats).endswith(", 2 validation (5% of the data, at most 2,000)")


def test_a_validation_file_is_never_capped(tmp_path, small_cap):
    data = write_alpaca(tmp_path / "train.jsonl", 40)
    val = write_alpaca(tmp_path / "val.jsonl", 30, seed=1)
    cfg = DataConfig(train=[str(data)], validation=[str(val)], template="alpaca", cache=False)
    prepared = prepare_datasets(cfg, tt.gpt2_style())
    removed = prepared.stats["validation_in_train_removed"]
    assert len(prepared.validation) == 30 - removed > 10
    assert summary_line(prepared.stats).endswith(f", {30 - removed} validation")
