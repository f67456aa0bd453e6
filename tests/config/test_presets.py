"""Every shipped YAML preset validates, and its first line is the command that runs it."""

from pathlib import Path

import pytest

from lmtune.config import load_config

PRESETS = sorted((Path(__file__).parent.parent.parent / "configs").glob("*.yaml"))


def test_presets_exist():
    names = {p.stem for p in PRESETS}
    for task in ("sql", "json"):
        for method in ("full", "lora", "qlora"):
            assert f"tiny-{task}-{method}" in names
    for model in ("llama-3.1-8b", "qwen2.5-7b", "mistral-7b"):
        assert {f"{model}-lora", f"{model}-qlora"} <= names


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_preset_validates_and_names_its_command(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith(f"# lmtune train configs/{path.name}"), first
    cfg = load_config(path)
    assert cfg.method in path.stem if cfg.train.objective == "sft" else cfg.train.objective in path.stem
    assert cfg.output.dir.endswith(path.stem)
