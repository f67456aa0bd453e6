"""Load a tokenizer without importing torch, for `lmtune data check --model`.

`AutoTokenizer` imports torch (transformers.configuration_utils -> modeling_rope_utils), which
costs seconds. For a local model directory the class named in tokenizer_config.json is looked up
on the `transformers` package directly (its lazy loader imports only that tokenizer module), which
gives the same tokenizer AutoTokenizer would, torch-free. Anything else falls back to AutoTokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lmtune.errors import UserError

EMBEDDED = ("tiny",)


def embedded_model_dir(name: str) -> Path:
    """Where the embedded base `name` lives inside the package."""
    return Path(__file__).resolve().parent.parent / "assets" / "base" / name


def resolve_model_path(name_or_path: str) -> str:
    """'tiny' -> the embedded directory (error when it has not been built); else unchanged."""
    if name_or_path in EMBEDDED:
        path = embedded_model_dir(name_or_path)
        if not (path / "tokenizer_config.json").is_file() and not (path / "tokenizer.json").is_file():
            raise UserError(f"the embedded '{name_or_path}' base is not built in this checkout ({path})",
                            ["build it with scripts/build_base.py, or pass --model DIR"])
        return str(path)
    return name_or_path


def load_tokenizer(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """Tokenizer for a local directory, the embedded 'tiny' base, or a Hub id (cached)."""
    path = resolve_model_path(name_or_path)
    local = Path(path).expanduser()
    if not local.is_dir() and (local.is_absolute() or path.startswith((".", "~"))):
        raise UserError(f"model directory not found: {path}",
                        ["pass an existing model directory, a cached Hub id (org/name), or 'tiny'"])
    try:
        if local.is_dir() and not trust_remote_code:
            return _load_local(local)
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot load a tokenizer from {name_or_path!r}",
                        [f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                         "pass a local model directory (with tokenizer.json) or a cached Hub id"]) from None


def _load_local(path: Path) -> Any:
    import transformers

    config_file = path / "tokenizer_config.json"
    config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    name = config.get("tokenizer_class") or "PreTrainedTokenizerFast"
    cls = getattr(transformers, name, None) or getattr(transformers, name.removesuffix("Fast"), None)
    if cls is None:  # an unknown class name: the generic tokenizers-backed class reads tokenizer.json
        cls = transformers.PreTrainedTokenizerFast
    return cls.from_pretrained(str(path))
