"""`lmtune export` reads more than a run: a plain Hugging Face folder (sharded, as save_pretrained
writes a large model) and a model from the local Hugging Face cache by its Hub id, never downloaded."""

from __future__ import annotations

import shutil

import gguf

from lmtune.cli import main as cli
from lmtune.export import export
from tiny_models import save_tiny_model


def _fields(path):
    return {k: v.contents() for k, v in gguf.GGUFReader(str(path)).fields.items()}


def test_sharded_plain_folder(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = save_tiny_model(tmp_path / "base", "llama")
    folder = tmp_path / "my-full-model"
    AutoModelForCausalLM.from_pretrained(str(base)).save_pretrained(str(folder), max_shard_size="20KB")
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(folder))
    shards = sorted(folder.glob("*.safetensors"))
    assert len(shards) > 1 and (folder / "model.safetensors.index.json").is_file()
    res = export(str(folder), str(tmp_path / "out"), quant="f32")
    reader = gguf.GGUFReader(str(res.gguf))
    assert len(reader.tensors) == len(AutoModelForCausalLM.from_pretrained(str(base)).state_dict())
    assert _fields(res.gguf)["general.name"] == "my-full-model"


def _cache(root, repo: str, files_from=None, only=None):
    """A Hugging Face cache entry laid out as huggingface_hub writes it (refs/main -> snapshot)."""
    entry = root / f"models--{repo.replace('/', '--')}"
    snapshot = entry / "snapshots" / ("c" * 40)
    snapshot.mkdir(parents=True)
    for f in files_from.iterdir():
        if only is None or f.name in only:
            shutil.copy(f, snapshot / f.name)
    (entry / "refs").mkdir()
    (entry / "refs" / "main").write_text("c" * 40)


def test_hub_id_from_the_local_cache(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    base = save_tiny_model(tmp_path / "base", "llama")
    hub = tmp_path / "hub"
    _cache(hub, "acme/tiny-llama", base)
    _cache(hub, "acme/config-only", base, only={"config.json"})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    assert cli(["export", "acme/tiny-llama", "--quant", "f16", "--out", str(tmp_path / "o1")]) == 0
    assert _fields(tmp_path / "o1" / "model-f16.gguf")["general.name"] == "tiny-llama"
    capsys.readouterr()

    assert cli(["export", "acme/absent", "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "acme/absent: no such folder, and not in the local Hugging Face cache" in err and "hf download acme/absent" in err
    assert cli(["export", "acme/config-only", "--out", str(tmp_path / "o3")]) == 2
    assert "acme/config-only: only part of it is in the Hugging Face cache" in capsys.readouterr().err
    assert cli(["export", "no-such-folder", "--out", str(tmp_path / "o4")]) == 2
    assert "no-such-folder: no such run or model directory" in capsys.readouterr().err
    assert not any((tmp_path / o).exists() for o in ("o2", "o3", "o4"))


def _model_with(tokenizer, path, vocab_size):
    import torch
    from transformers import AutoModelForCausalLM

    from tiny_models import model_config

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(model_config("llama", vocab_size)).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def test_tokenizers_the_gguf_cannot_hold(tmp_path, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tiny_models import build_tokenizer

    small = _model_with(build_tokenizer(), tmp_path / "small", vocab_size=300)   # the tokenizer has 320 ids
    assert cli(["export", str(small), "--quant", "f16", "--out", str(tmp_path / "o1")]) == 2
    assert "token ids past the model's vocab_size 300" in capsys.readouterr().err
    wp = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.train_from_iterator(["a small corpus of words"] * 4, trainers.WordPieceTrainer(
        vocab_size=64, special_tokens=["[UNK]", "[SEP]"], show_progress=False))
    wordpiece = PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", eos_token="[SEP]")
    bert = _model_with(wordpiece, tmp_path / "bert", vocab_size=64)
    assert cli(["export", str(bert), "--quant", "f16", "--out", str(tmp_path / "o2")]) == 2
    assert "a WordPiece tokenizer that is neither byte-level BPE nor SentencePiece-style" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
