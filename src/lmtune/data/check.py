"""What a dataset holds and everything wrong with it, before training (`lmtune data check`).

The detected format, record/example counts, duplicates, a rendered sample with the trained part
marked, and (with a tokenizer) token lengths, truncation and the share of trained tokens. Every bad
record is a `file:line: what is wrong (field)` problem of the DataError raised at the end (exit 2).
The same scan, dedupe and tokenizer as training (records.py, arrow_pipeline.py, token_shards.py):
large files are read as a stream and checked in parallel; nothing is cached. Without a model
nothing heavy is imported (no torch, no transformers).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lmtune.data.arrow_pipeline import conflicting_prompts, dedupe_positions, first_duplicates
from lmtune.data.preference import load_preference, raise_problems, render
from lmtune.data.records import ScannedSplit, scan
from lmtune.data.templates import TemplateError, get_template, resolve_template_name
from lmtune.data.token_shards import tokenize_to_arrow
from lmtune.errors import DataError
from lmtune.models import EMBEDDED, embedded_model_dir, open_tokenizer

SAMPLE_CHARS = 1500


@dataclass
class CheckOptions:
    format: str = "auto"
    template: str = "auto"
    model: str | None = None          # tokenizer for token statistics; None: no token statistics
    max_length: int = 512
    train_on_prompt: bool = False
    system_prompt: str | None = None
    samples: int = 1                  # rendered samples to show


def check_data(files: list[str], options: CheckOptions, emit: Callable[[str], None] = print) -> int:
    """Report on `files` line by line through `emit`; 0 when all is well, else raise DataError
    listing every problem. The records live in a temporary Arrow file while the report is made."""
    with tempfile.TemporaryDirectory(prefix="lmtune-check-") as tmp:
        return _Check(files, options, emit).run(Path(tmp))


class _Check:
    def __init__(self, files: list[str], options: CheckOptions, emit: Callable[[str], None]):
        self.files, self.o, self.emit = files, options, emit

    def run(self, tmp: Path) -> int:
        split = scan(self.files, self.o.format, tmp / "records.arrow")
        problems = list(split.problems)
        self.emit(", ".join(self.files))
        detected = "detected" if self.o.format == "auto" else "given"
        self.row("format", f"{split.format or 'unknown'} ({detected})")
        self.row("records", f"{split.records} read, {len(split)} valid")
        kept = dedupe_positions(split, True, {}, "check")
        first = first_duplicates(split, 1)
        example = f" (e.g. {first[0][0]} repeats {first[0][1]})" if first else ""
        self.row("duplicates", f"{len(split) - len(kept)}, dropped in training: equal up to whitespace{example}")
        self.row("examples", f"{len(kept)} after dropping duplicates")
        conflicts = conflicting_prompts(split, kept)
        if conflicts:
            self.row("conflicts", f"{conflicts} prompts appear with different answers")
        if len(kept):
            problems += self.template_report(split, kept)
        if problems:
            n = len(problems)
            raise DataError(f"{n} problem{'s' if n != 1 else ''} in {split.records} records; fix each line "
                            f"below", problems)
        if not len(kept):
            raise DataError("no examples", [f"{', '.join(self.files)}: no records found"])
        self.emit(f"ok: {len(kept)} examples, no problems")
        return 0

    def row(self, label: str, value: str) -> None:
        self.emit(f"  {label:<12}{value}")

    def template_report(self, split: ScannedSplit, kept: Any) -> list[str]:
        """Template, token statistics (with a tokenizer) and samples; returns template problems."""
        data_format = split.format
        tokenizer, missing = (_tokenizer(self.o.model) if self.o.model else (None, ""))
        template = get_template(self.o.template, data_format, tokenizer, self.o.system_prompt)
        note = ""
        if self.o.template == "auto" and tokenizer is None and resolve_template_name("auto", data_format) != "raw":
            note = " (auto, no tokenizer; with a model that has a chat template auto picks 'model')"
        if template.name == "model":
            markers = "with" if template.has_generation_markers else "without"
            note = f" (the tokenizer's chat template, {markers} {{% generation %}} markers)"
        self.row("template", template.name + note)
        if tokenizer is None:
            self.row("tokens", missing or "not counted: pass --model DIR, a cached Hub id, or --model tiny")
            return self.segment_samples(template, split, kept)
        return self.token_report(template, tokenizer, split, kept)

    def token_report(self, template: Any, tokenizer: Any, split: ScannedSplit, kept: Any) -> list[str]:
        o = self.o
        tok = tokenize_to_arrow(split, kept, template, tokenizer, o.max_length, o.train_on_prompt, None,
                                "examples", keep_samples=o.samples)
        s = tok.stats()
        self.emit(f"tokens (tokenizer {o.model}, max_length {o.max_length})")
        if s["examples"] or s["dropped"]:
            self.row("length", f"min {s['length_min']}  median {s['length_median']}  p95 {s['length_p95']}  "
                               f"max {s['length_max']}")
            dropped = f", {s['dropped']} of them lose the whole answer and are dropped" if s["dropped"] else ""
            self.row("truncated", f"{s['truncated']} of {len(tok.full_lengths)} longer than {o.max_length}{dropped}")
            self.row("trained", f"{100 * s['trained_share']:.1f}% of {s['tokens']} tokens "
                                f"({'prompt included' if o.train_on_prompt else 'answers + eos'})")
        if s["dropped"]:
            self.emit(f"warning: {s['dropped']} examples would lose their whole answer at max_length "
                      f"{o.max_length} and be dropped; raise --max-length (data.max_length)")
        for ids, mask, source in tok.samples[: o.samples]:
            self.sample(source, template.name, _token_pieces(tokenizer, ids, mask))
        return tok.problems

    def segment_samples(self, template: Any, split: ScannedSplit, kept: Any) -> list[str]:
        problems, shown = [], 0
        for start in range(0, len(kept), 10_000):
            for ex in split.examples(kept[start:start + 10_000]):
                try:
                    segments = template.segments(ex)
                except TemplateError as exc:
                    problems.append(f"{ex.source}: {exc}")
                    continue
                if shown < self.o.samples:
                    pieces = [(s.text, s.trained) for s in segments] + [("<eos>", True)]
                    self.sample(ex.source, template.name, pieces)
                    shown += 1
        return problems

    def sample(self, source: str, template: str, pieces: list[tuple[str, bool]]) -> None:
        merged: list[tuple[str, bool]] = []
        for t, trained in pieces:
            if merged and merged[-1][1] == trained:
                merged[-1] = (merged[-1][0] + t, trained)
            else:
                merged.append((t, trained))
        text = "".join(f"[[{t}]]" if trained else t for t, trained in merged)
        if len(text) > SAMPLE_CHARS:
            text = text[:SAMPLE_CHARS] + f" ... ({len(text) - SAMPLE_CHARS} more characters)"
        self.emit(f"sample {source} (template {template}; trained tokens inside [[ ]])")
        for line in text.split("\n"):
            self.emit(f"  | {line}")


def _tokenizer(model: str) -> tuple[Any, str]:
    """(tokenizer, "") or (None, why not) when the embedded base is not built in this checkout."""
    if model in EMBEDDED and not (embedded_model_dir(model) / "tokenizer.json").is_file():
        return None, f"not counted: the embedded '{model}' base is not built yet (scripts/build_base.py)"
    return open_tokenizer(model), ""


def _token_pieces(tokenizer: Any, ids: list[int], mask: list[int]) -> list[tuple[str, bool]]:
    pieces, start = [], 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or mask[i] != mask[start]:
            pieces.append((tokenizer.decode(ids[start:i], skip_special_tokens=False), bool(mask[start])))
            start = i
    return pieces


def check_preference(files: list[str], options: CheckOptions, kind: str,
                     emit: Callable[[str], None] = print) -> int:
    """`lmtune data check` on preference records (data/preference.py): counts, every bad record as
    `file:line: what is wrong (field)`, and pairs rendered with the template; 0, or DataError."""
    loaded = load_preference(files, kind)

    def row(label: str, value: str) -> None:
        emit(f"  {label:<12}{value}")

    emit(", ".join(files))
    objectives = "dpo, orpo" if kind == "pairs" else "kto"
    row("format", f"{kind} (detected; train.objective {objectives})")
    row("records", f"{loaded.records} read, {len(loaded.rows)} valid")
    if kind == "kto" and loaded.rows:
        good = sum(1 for r in loaded.rows if r["label"])
        row("labels", f"{good} desirable, {len(loaded.rows) - good} undesirable")
    raise_problems(loaded, "data")
    tokenizer = _tokenizer(options.model)[0] if options.model else None
    template = get_template(options.template, "chat", tokenizer, options.system_prompt)
    rendered, problems = render(loaded.rows[: max(options.samples, 1)], loaded.sources, template)
    if problems:
        raise DataError(f"{len(problems)} records the template cannot render", problems)
    row("template", template.name)
    for item, source in list(zip(rendered, loaded.sources))[: options.samples]:
        answers = [k for k in ("chosen", "rejected", "completion") if k in item]
        emit(f"sample {source} (template {template.name}; answers inside [[ ]])")
        text = item["prompt"] + "".join(f"\n{k}: [[{item[k]}]]" for k in answers)
        for line in text[:SAMPLE_CHARS].split("\n"):
            emit(f"  | {line}")
    emit(f"ok: {len(loaded.rows)} {kind} records, no problems")
    return 0
