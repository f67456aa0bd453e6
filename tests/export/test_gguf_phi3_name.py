"""general.name and llama.cpp's Phi-3 rule: llama.cpp strips the whitespace after every special
token (but <unk>, <s>, <|endoftext|>) of a model whose general.name contains "phi3" or "phi-3",
whatever the tokenizer says. The name must say phi3 exactly when the tokenizer itself strips so,
or llama.cpp's chat prompt loses (or keeps) the newline after <|user|> that transformers keeps
(or drops): scripts/check_gguf_tokenizers.py showed the first case in llama.cpp itself."""

from __future__ import annotations

import gguf
from transformers import AutoTokenizer

from family_tokenizers import mark_phi3_rstrip, save_family_model
from lmtune.export import export
from lmtune.export.gguf_vocab import strips_like_phi3


def _name(res) -> str:
    return gguf.GGUFReader(str(res.gguf)).fields["general.name"].contents()


def _newline_kept(model_dir) -> bool:
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    ids = tok("<|user|>\nHi", add_special_tokens=False)["input_ids"]
    return "<0x0A>" in tok.convert_ids_to_tokens(ids)


def test_phi3_name_without_phi3_stripping_is_written_apart(tmp_path):
    """A tokenizer that keeps the newline after <|user|>, in a run named phi3: not a llama.cpp phi3."""
    model_dir = save_family_model(tmp_path / "phi3", "phi3")
    assert _newline_kept(model_dir) and not strips_like_phi3(AutoTokenizer.from_pretrained(str(model_dir)))
    assert _name(export(str(model_dir), str(tmp_path / "out"), quant="f32")) == "phi 3"


def test_phi3_stripping_tokenizer_is_named_phi3(tmp_path):
    """Phi-3's own flags (rstrip on its role tokens), in a run with any name: llama.cpp must apply
    its Phi-3 rule, so the name carries phi3; a name that has it already is kept."""
    model_dir = mark_phi3_rstrip(save_family_model(tmp_path / "sql-bot", "phi3"))
    assert not _newline_kept(model_dir) and strips_like_phi3(AutoTokenizer.from_pretrained(str(model_dir)))
    assert _name(export(str(model_dir), str(tmp_path / "out"), quant="f32")) == "sql-bot (phi3)"
    named = mark_phi3_rstrip(save_family_model(tmp_path / "Phi-3-mini-sql", "phi3"))
    assert _name(export(str(named), str(tmp_path / "out2"), quant="f32")) == "Phi-3-mini-sql"


def test_other_families_never_named_phi3(tmp_path):
    """Llama 2 has </s>, <unk>, <s> but no <|endoftext|> and no rstrip: a 'phi3' in its name goes."""
    model_dir = save_family_model(tmp_path / "phi3-on-llama2", "llama2")
    assert _name(export(str(model_dir), str(tmp_path / "out"), quant="f32")) == "phi 3-on-llama2"
