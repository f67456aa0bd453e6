"""`lmtune export RUN --format gguf`: the merged model as GGUF plus an Ollama Modelfile, both
carrying the run's own template and stops, and the template as chat_template.jinja (for
`vllm serve --chat-template` or any runtime that takes a Jinja chat template). RUN is a run
directory, an adapter, a plain Hugging Face model folder (merged or full) or a Hub id already in the
local Hugging Face cache (read from there, never downloaded).

A run with an adapter is merged first through lmtune.merge (the same checks as `lmtune merge`) into
a marked scratch folder next to --out, removed afterwards (lmtune/export/scratch.py). --out must be
new or empty, and outside what export reads (the run directory itself, its adapter/ or model/, the
base); with --overwrite only the files export writes (the .gguf, Modelfile, chat_template.jinja)
are replaced, nothing else in the folder is touched. Every check, the model family included, runs
before --out is created; a failure after it removes only the folders this command created, and
only when empty. Files appear whole or not at all (temp name + rename); what a killed export left
is removed by the next export to the same --out, which says so.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import lmtune.merge
from lmtune.data.templates import Rendered
from lmtune.data.tokenize import encode_prompt
from lmtune.errors import UserError
from lmtune.export import scratch as sc
from lmtune.export.chat_formats import jinja_chat_template, modelfile
from lmtune.export.gguf_file import QUANTS, read_config, write_gguf
from lmtune.export.gguf_vocab import check_tokenizer
from lmtune.generate import stop_ids_of, stop_texts_of, template_for
from lmtune.inference_loading import HUB_ID, cached_hub_model, check_weights, open_path
from lmtune.run.layout import probe_writable, write_text

FORMATS = ("gguf",)


@dataclass
class ExportResult:
    gguf: Path
    modelfile: Path
    quant: str
    size_bytes: int
    summary: dict


def _check_out(out: Path, overwrite: bool, written: list[str], ours: list[Path]) -> None:
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory", ["choose a directory path for --out"])
    theirs = [p for p in out.iterdir() if p not in ours] if out.is_dir() else []
    if theirs and not overwrite:
        raise UserError(f"--out {out} is not empty", ["choose a new or empty directory, or pass --overwrite "
                                                      f"(which replaces only {', '.join(written)})"])


def _check_outside_inputs(out: Path, run_path: str, loaded) -> None:
    """--out may not be the run directory, nor inside what export reads: the files there belong to
    the run (an adapter/ or model/ with a .gguf in it is no longer what training saved)."""
    target = out.resolve()
    reads = [(what, Path(p).resolve()) for what, p in (("adapter", loaded.adapter_dir), ("model", loaded.model_dir),
                                                        ("base model", loaded.base_ref)) if p and Path(p).is_dir()]
    if loaded.kind == "run" and target == Path(run_path).resolve():
        raise UserError(f"--out {out} is the run directory {run_path}, which export reads",
                        [f"write the export to a new folder, e.g. --out {Path(run_path) / 'gguf'}"])
    for what, path in reads:
        if target == path or target.is_relative_to(path):
            raise UserError(f"--out {out} is inside the {what} {path}, which export reads",
                            ["write the export to a new folder outside it, e.g. --out exported/"])


def _check_family(loaded) -> None:
    """An architecture the GGUF writer does not know is refused before any merge or folder."""
    source = Path(loaded.model_dir or loaded.base_ref)
    if (source / "config.json").is_file():
        read_config(source)


def _check_tokenizer(loaded) -> None:
    """A tokenizer the GGUF cannot hold is refused before any merge or folder too (the tokenizer
    export writes is the adapter's or the model's own, else the base's)."""
    for source in (loaded.adapter_dir, loaded.model_dir, loaded.base_ref):
        if source is not None and Path(source).is_dir() and (Path(source) / "tokenizer_config.json").is_file():
            check_tokenizer(Path(source))
            return


def export(run_path: str, out: str, fmt: str = "gguf", quant: str = "q8_0", overwrite: bool = False,
           pre_tokenizer: str | None = None) -> ExportResult:
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt}: not supported", [f"allowed: {', '.join(FORMATS)}"])
    if quant not in QUANTS:
        raise UserError(f"--quant {quant}: not supported for GGUF", [f"allowed: {', '.join(QUANTS)}"])
    name = _name(run_path)
    if not Path(run_path).exists() and run_path != "tiny":
        if not HUB_ID.fullmatch(run_path):
            raise UserError(f"{run_path}: no such run or model directory",
                            ["give a run directory, an adapter, a model folder, a Hub id in the local cache "
                             "(owner/name) or 'tiny'"])
        run_path = str(cached_hub_model(run_path))   # a model from the Hub cache, by name
    loaded = open_path(run_path, weights=False)
    out_dir = Path(out)
    gguf_name = f"model-{quant}.gguf"
    written = [gguf_name, "Modelfile", "chat_template.jinja"]
    left = sc.leftovers(out_dir, written)
    _check_out(out_dir, overwrite, written, left)
    _check_outside_inputs(out_dir, run_path, loaded)
    check_weights(loaded)
    _check_family(loaded)
    _check_tokenizer(loaded)
    probe_writable(sc.nearest_existing(out_dir), "--out")   # where the scratch and --out will go
    if left:
        sc.remove(left)
        print(f"note: removed what an interrupted export left: {', '.join(str(p) for p in left)}")
    work = sc.make_scratch(out_dir) if loaded.adapter_dir is not None else None
    created: list[Path] = []
    try:
        model_dir = _merged_dir(run_path, loaded, work)
        read_config(model_dir)  # a model without config.json beside it: checked on the merged folder
        created = _make_dir(out_dir)
        return _write(model_dir, loaded, out_dir, gguf_name, quant, name, pre_tokenizer)
    except BaseException:
        for d in created:   # deepest first; a folder that holds anything stays
            if d.is_dir() and not any(d.iterdir()):
                d.rmdir()
        raise
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)  # lmtune made it just now (tempfile.mkdtemp)


def _make_dir(out: Path) -> list[Path]:
    """Create --out; returns the folders that did not exist, deepest first."""
    missing, p = [], out.absolute()
    while not p.exists():
        missing.append(p)
        p = p.parent
    out.mkdir(parents=True, exist_ok=True)
    return missing


def _name(run_path: str) -> str:
    p = Path(run_path)
    return p.resolve().name if p.exists() else run_path.rsplit("/", 1)[-1]


def _merged_dir(run_path: str, loaded, work: Path | None) -> Path:
    """The folder holding standalone weights: the model itself, or the adapter merged into scratch."""
    if loaded.adapter_dir is not None:
        merged = work / "merged"
        lmtune.merge.merge(run_path, str(merged))
        return merged
    return Path(loaded.model_dir or loaded.base_ref)


def prompt_bos(tokenizer, template) -> str | None:
    """The bos text lmtune's generate path starts a prompt with outside the template's own text
    (the tokenizer's prefix before an alpaca, chatml or raw layout), else None."""
    if template.name == "model" or tokenizer.bos_token is None:
        return None
    ids = encode_prompt(tokenizer, template, Rendered("Hi"))   # text as is: only the prefix is in question
    return tokenizer.bos_token if ids[:1] == [tokenizer.bos_token_id] else None


def _write(model_dir: Path, loaded, out_dir: Path, gguf_name: str, quant: str, name: str,
           pre_tokenizer: str | None) -> ExportResult:
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    template = template_for(loaded, tokenizer)
    try:
        gen_cfg = GenerationConfig.from_pretrained(str(model_dir))
    except OSError:  # no generation_config.json: eos alone
        gen_cfg = None
    stops = stop_texts_of(tokenizer, stop_ids_of(tokenizer, gen_cfg, template), template)
    chat_template = jinja_chat_template(template, prompt_bos(tokenizer, template))
    final = out_dir / gguf_name
    tmp = out_dir / sc.gguf_tmp_name(gguf_name)
    try:
        summary = write_gguf(model_dir, tmp, quant, chat_template, stops, name, pre_tokenizer)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    context = read_config(model_dir)["max_position_embeddings"]
    bos = tokenizer.bos_token if summary.get("add_bos") else None   # Ollama adds it: not in the Go template
    write_text(out_dir / "Modelfile", modelfile(gguf_name, template, stops, context, bos))
    write_text(out_dir / "chat_template.jinja", chat_template)
    return ExportResult(final, out_dir / "Modelfile", quant, final.stat().st_size,
                        {**summary, "template": template.name, "stops": stops})
