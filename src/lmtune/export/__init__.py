"""`lmtune export RUN --format gguf`: the merged model as GGUF plus an Ollama Modelfile, both
carrying the run's own template and stops, and the template as chat_template.jinja (for
`vllm serve --chat-template` or any runtime that takes a Jinja chat template).

A run with an adapter is merged first through lmtune.merge (the same checks as `lmtune merge`) into
a temporary folder inside --out that is removed afterwards. --out must be new or empty; with
--overwrite only the files export writes (the .gguf, Modelfile, chat_template.jinja) are replaced, nothing else in
the folder is touched. Files appear whole or not at all (temp name + rename).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lmtune.errors import UserError

FORMATS = ("gguf",)


@dataclass
class ExportResult:
    gguf: Path
    modelfile: Path
    quant: str
    size_bytes: int
    summary: dict


def _check_out(out: Path, overwrite: bool, written: list[str]) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory", ["choose a directory path for --out"])
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise UserError(f"--out {out} is not empty", ["choose a new or empty directory, or pass --overwrite "
                                                      f"(which replaces only {', '.join(written)})"])


def export(run_path: str, out: str, fmt: str = "gguf", quant: str = "q8_0", overwrite: bool = False,
           pre_tokenizer: str | None = None) -> ExportResult:
    from lmtune.export.gguf_file import QUANTS

    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: not supported", [f"allowed: {', '.join(FORMATS)}"])
    if quant not in QUANTS:
        raise UserError(f"--quant {quant}: not supported for GGUF", [f"allowed: {', '.join(QUANTS)}"])
    from lmtune.inference_loading import open_path

    if not Path(run_path).exists() and run_path != "tiny":
        raise UserError(f"{run_path}: no such run or model directory",
                        ["give a run directory, an adapter, a merged model directory or 'tiny'"])
    loaded = open_path(run_path)
    out_dir = Path(out)
    gguf_name = f"model-{quant}.gguf"
    _check_out(out_dir, overwrite, [gguf_name, "Modelfile", "chat_template.jinja"])
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = out_dir / ".lmtune-export.merge"
    try:
        model_dir = _merged_dir(run_path, loaded, scratch)
        from lmtune.export.gguf_file import read_config

        read_config(model_dir)  # unsupported architectures fail before any writing
        return _write(model_dir, loaded, out_dir, gguf_name, quant, _name(run_path), pre_tokenizer)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)  # lmtune wrote it just now


def _name(run_path: str) -> str:
    p = Path(run_path)
    return p.resolve().name if p.exists() else run_path


def _merged_dir(run_path: str, loaded, scratch: Path) -> Path:
    """The folder holding standalone weights: the model itself, or the adapter merged into scratch."""
    if loaded.adapter_dir is not None:
        from lmtune.merge import merge

        merge(run_path, str(scratch), overwrite=True)
        return scratch
    return Path(loaded.model_dir or loaded.base_ref)


def _write(model_dir: Path, loaded, out_dir: Path, gguf_name: str, quant: str, name: str,
           pre_tokenizer: str | None) -> ExportResult:
    from transformers import AutoTokenizer, GenerationConfig

    from lmtune.export.chat_formats import jinja_chat_template, modelfile
    from lmtune.export.gguf_file import read_config, write_gguf
    from lmtune.generate import stop_ids_of, stop_texts_of, template_for
    from lmtune.run.layout import write_text

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    template = template_for(loaded, tokenizer)
    try:
        gen_cfg = GenerationConfig.from_pretrained(str(model_dir))
    except OSError:  # no generation_config.json: eos alone
        gen_cfg = None
    stops = stop_texts_of(tokenizer, stop_ids_of(tokenizer, gen_cfg, template), template)
    chat_template = jinja_chat_template(template)
    final = out_dir / gguf_name
    tmp = out_dir / f".{gguf_name}.tmp"
    try:
        summary = write_gguf(model_dir, tmp, quant, chat_template, stops, name, pre_tokenizer)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    context = read_config(model_dir)["max_position_embeddings"]
    write_text(out_dir / "Modelfile", modelfile(gguf_name, template, stops, context))
    write_text(out_dir / "chat_template.jinja", chat_template)
    return ExportResult(final, out_dir / "Modelfile", quant, final.stat().st_size,
                        {**summary, "template": template.name, "stops": stops})
