"""The forgetting check's parts with literal expectations (lmtune/evaluate/forgetting.py): reading
the probe, the probe length per model, the ratio and its explanation. Fast: no model runs."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
from transformers import GPT2Config, LlamaConfig

from lmtune.errors import DataError
from lmtune.evaluate.forgetting import MAX_PASSAGES, compare_perplexity, load_probe, probe_max_length


def test_load_probe_reads_texts_skips_blank_lines_and_stops_at_the_limit(tmp_path):
    path = tmp_path / "probe.jsonl"
    path.write_text("\n".join([json.dumps({"text": "one"}), "", "  ", json.dumps({"text": "two"}),
                               json.dumps({"text": "three"})]) + "\n")
    assert load_probe(path) == ["one", "two", "three"]
    assert load_probe(path, limit=2) == ["one", "two"]
    assert load_probe(path, limit=1) == ["one"]


@pytest.mark.parametrize("line", ['["text"]', '{"txt": "a"}', '{"text": 3}'])
def test_a_bad_probe_line_names_file_and_line(tmp_path, line):
    path = tmp_path / "probe.jsonl"
    path.write_text(json.dumps({"text": "fine"}) + "\n\n" + line + "\n")
    with pytest.raises(DataError, match=rf"probe.jsonl:3: expected \{{\"text\": \.\.\.\}}"):
        load_probe(path)


def test_the_bundled_probe_loads_capped():
    texts = load_probe()
    assert 10 <= len(texts) <= MAX_PASSAGES and all(isinstance(t, str) and t for t in texts)


@pytest.mark.parametrize("config, expected", [
    (LlamaConfig(max_position_embeddings=256), 256),
    (LlamaConfig(max_position_embeddings=4096), 512),
    (GPT2Config(n_positions=128), 128),
    (SimpleNamespace(n_positions=64), 64),            # remote-code configs may name only n_positions
    (SimpleNamespace(max_position_embeddings=1), 1),  # any positive limit counts
    (SimpleNamespace(max_position_embeddings=0), 512),  # 0: unknown
    (None, 512),
])
def test_probe_length_is_512_or_less_where_the_model_has_fewer_positions(config, expected):
    assert probe_max_length(SimpleNamespace(config=config)) == expected
    assert probe_max_length(object()) == 512  # no config at all


def test_ratio_and_explanation():
    r = compare_perplexity(20.0, 50.0, 1.5, 3.0, passages=4, tokens=120, probe="general/probe.jsonl")
    assert r.ratio == pytest.approx(2.5) and r.verdict == "warning"
    assert r.explain() == ("warning: probe perplexity 20.0 -> 50.0 (x2.50; warn above x1.5, forgotten above x3): "
                           "general text became noticeably harder to predict")
    assert r.to_dict()["passages"] == 4 and r.to_dict()["tokens"] == 120
    assert r.to_dict()["probe"] == "general/probe.jsonl"
    ok = compare_perplexity(20.0, 21.0, 1.5, 3.0, 1, 1, "p")
    assert ok.explain() == ("ok: probe perplexity 20.0 -> 21.0 (x1.05; warn above x1.5, forgotten above x3): "
                            "general text is as predictable as before")
    gone = compare_perplexity(20.0, 100.0, 1.5, 3.0, 1, 1, "p")
    assert gone.explain().endswith("): the model has lost much of its general ability")
    perfect = compare_perplexity(1.0, 1.2, 1.5, 3.0, 1, 1, "p")  # perplexity 1: a perfect base
    assert perfect.ratio == pytest.approx(1.2) and perfect.verdict == "ok"
    broken = compare_perplexity(0.0, 10.0, 1.5, 3.0, 1, 1, "p")
    assert math.isnan(broken.ratio) and broken.verdict == "forgotten"
