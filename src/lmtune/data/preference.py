"""Preference data for train.objective dpo, orpo and kto, in the field's formats (TRL's):

  pairs (dpo, orpo)  {"prompt": ..., "chosen": ..., "rejected": ...}
  kto                {"prompt": ..., "completion": ..., "label": true|false}

Each is plain (prompt and answers are strings) or conversational (prompt: a list of messages;
an answer: a string or a list holding one assistant message). Every record is checked with
`file:line: what is wrong (field)`, as SFT data is.

The prompt is rendered by the run's template, the one SFT uses (templates.py): a plain prompt is
one user turn. The answer is the text the template trains after that prompt (for chatml its
end-of-turn marker too), so a preference run generates with `lmtune generate` like an SFT run.
TRL then sees plain {prompt, chosen, rejected} text and adds the eos, as SFT's tokenization does.

A pair may say `"rejected_partial": true`: its rejected answer stops at its mistake (`lmtune pairs
--cut`), so it is trained without the end-of-turn text and without the eos (objectives.py takes off
the one TRL appends). Otherwise DPO would also push down an end right after the mistake, which the
model already all but never writes: an easy, useless margin that grows instead of the mistake's.
"""

from __future__ import annotations

import difflib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lmtune.data.formats import Example
from lmtune.data.prepare import resolve_files
from lmtune.data.readers import Record, read_paths
from lmtune.data.templates import Template, TemplateError
from lmtune.errors import DataError
from lmtune.train.hparams import DataSize

PAIR_KEYS = ("prompt", "chosen", "rejected")
PARTIAL = "rejected_partial"   # optional on pairs: true where the rejected answer stops at its mistake
KTO_KEYS = ("prompt", "completion", "label")
KIND_OF = {"dpo": "pairs", "orpo": "pairs", "kto": "kto"}


def kind_of_record(value: Any) -> str | None:
    """pairs, kto or None (not preference data) from a record's keys."""
    if not isinstance(value, dict):
        return None
    if "chosen" in value or "rejected" in value:
        return "pairs"
    if "label" in value and "completion" in value:
        return "kto"
    return None


def sniff_kind(paths: list[str]) -> str | None:
    """The kind of the first record of the first JSON Lines file, without reading the rest (for
    `lmtune data check`, which must not read a large SFT file twice)."""
    for path in paths:
        files = sorted(Path(path).rglob("*.jsonl")) if Path(path).is_dir() else [Path(path)]
        for file in files:
            if file.suffix != ".jsonl" or not file.is_file():
                continue
            with open(file, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.strip():
                        try:
                            return kind_of_record(json.loads(line))
                        except ValueError:
                            return None
    return None


# ---------------------------------------------------------------- checking records

def _text(value: dict, key: str, where: str, problems: list[str]) -> Any:
    """A non-empty string, or a non-empty list of {role, content} messages."""
    if key not in value:
        problems.append(f"{where}: missing field ({key})")
        return None
    item = value[key]
    if isinstance(item, str):
        if not item.strip():
            problems.append(f"{where}: empty string ({key})")
        return item
    if isinstance(item, list):
        if not item:
            problems.append(f"{where}: empty list of messages ({key})")
            return None
        for i, m in enumerate(item):
            ok = isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            if not ok:
                problems.append(f"{where}: message {i + 1} is not {{role, content}} strings ({key})")
                return None
            if m["role"] not in ("system", "user", "assistant"):
                problems.append(f"{where}: message {i + 1} has role {m['role']!r}, allowed: system, user, "
                                f"assistant ({key})")
                return None
        return item
    problems.append(f"{where}: expected a string or a list of messages, got {type(item).__name__} ({key})")
    return None


def _answer(value: dict, key: str, where: str, problems: list[str]) -> str | None:
    """An answer as text: a string, or a list holding one assistant message."""
    item = _text(value, key, where, problems)
    if isinstance(item, list):
        if len(item) != 1 or item[0]["role"] != "assistant":
            problems.append(f"{where}: expected one assistant message, got {len(item)} messages "
                            f"({', '.join(m['role'] for m in item)}) ({key})")
            return None
        item = item[0]["content"]
        if not item.strip():
            problems.append(f"{where}: empty assistant message ({key})")
            return None
    return item


def _prompt(value: dict, where: str, problems: list[str]) -> list[dict] | None:
    item = _text(value, "prompt", where, problems)
    if isinstance(item, str):
        return [{"role": "user", "content": item}]
    if isinstance(item, list) and item[-1]["role"] == "assistant":
        problems.append(f"{where}: the prompt ends with an assistant message; the answer goes in the "
                        f"answer fields (prompt)")
        return None
    return item


# fields read by people, not trainers: `lmtune pairs` writes the scores and where each answer came from
INFORMATIONAL = {"id", "metadata", "score_chosen", "score_rejected", "chosen_from", "rejected_from"}


def check_record(record: Record, kind: str) -> tuple[dict | None, list[str]]:
    """One record -> {prompt: messages, chosen, rejected} or {prompt, completion, label}, or problems."""
    v, where, problems = record.value, record.source, []
    if not isinstance(v, dict):
        return None, [f"{where}: expected a JSON object"]
    allowed = PAIR_KEYS if kind == "pairs" else KTO_KEYS
    unknown = sorted(set(v) - set(allowed) - INFORMATIONAL - ({PARTIAL} if kind == "pairs" else set()))
    for name in unknown:
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        problems.append(f"{where}: unknown field {name!r}{hint}; {kind} records have {', '.join(allowed)}")
    prompt = _prompt(v, where, problems)
    if kind == "pairs":
        chosen, rejected = _answer(v, "chosen", where, problems), _answer(v, "rejected", where, problems)
        if chosen is not None and rejected is not None and chosen.strip() and chosen.strip() == rejected.strip():
            problems.append(f"{where}: chosen and rejected are the same text; a pair teaches nothing (chosen)")
        partial = v.get(PARTIAL, False)
        if not isinstance(partial, bool):
            problems.append(f"{where}: expected true or false, got {partial!r} ({PARTIAL})")
        row = {"prompt": prompt, "chosen": chosen, "rejected": rejected, PARTIAL: partial is True}
    else:
        completion = _answer(v, "completion", where, problems)
        label = v.get("label")
        if "label" in v and not isinstance(label, bool):
            problems.append(f"{where}: expected true or false, got {label!r} (label)")
        row = {"prompt": prompt, "completion": completion, "label": label}
    return (None if problems else row), problems


@dataclass
class PreferenceRecords:
    kind: str
    rows: list[dict] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    records: int = 0
    problems: list[str] = field(default_factory=list)


def load_preference(paths: list[str], kind: str) -> PreferenceRecords:
    """Read and check every record of `paths` as `kind` (pairs or kto)."""
    read = read_paths(paths)
    out = PreferenceRecords(kind, records=len(read.records) + len(read.bad_sources), problems=list(read.problems))
    other = "kto" if kind == "pairs" else "pairs"
    if read.records and all(kind_of_record(r.value) == other for r in read.records):
        # a whole file of the other kind: one line, not one per missing field
        reads = "prompt, completion, label), for train.objective kto" if other == "kto" else \
            "prompt, chosen, rejected), for train.objective dpo or orpo"
        out.problems.append(f"{read.records[0].file}: holds {other} records ({reads}; this objective reads "
                            f"{', '.join(PAIR_KEYS if kind == 'pairs' else KTO_KEYS)}")
        return out
    for record in read.records:
        row, problems = check_record(record, kind)
        out.problems += problems
        if row is not None:
            out.rows.append(row)
            out.sources.append(record.source)
    if not out.problems and not out.rows:
        out.problems.append(f"{', '.join(map(str, paths)) or '(no files)'}: no {kind} records")
    if kind == "kto" and out.rows and not out.problems and len({r["label"] for r in out.rows}) < 2:
        only = "desirable (true)" if out.rows[0]["label"] else "undesirable (false)"
        out.problems.append(f"{paths[0]}: every label is {only}; kto needs both kinds of examples (label)")
    return out


def raise_problems(loaded: PreferenceRecords, what: str) -> None:
    if loaded.problems:
        n = len(loaded.problems)
        raise DataError(f"{n} problem{'s' if n != 1 else ''} in the {what}: {loaded.records - len(loaded.rows)} "
                        f"of {loaded.records} records are bad; fix each line below", loaded.problems)


# ---------------------------------------------------------------- rendering with the run's template

def _answer_text(template: Template, messages: list[dict], answer: str, prompt_text: str) -> str:
    """What the template trains after `prompt_text` when `answer` is the reply: the answer and the
    template's own end-of-turn text (chatml: <|im_end|>), the eos left to the trainer."""
    example = Example("<pair>", "chat", messages=[*messages, {"role": "assistant", "content": answer}],
                      fields={"instruction": messages[-1]["content"], "input": "", "output": answer})
    segments = template.segments(example)
    last = max(i for i, s in enumerate(segments) if s.trained)
    through = "".join(s.text for s in segments[: last + 1])
    if not through.startswith(prompt_text):
        raise TemplateError("the template renders the prompt differently once an answer follows")
    return through[len(prompt_text):]


def _open_text(template: Template, messages: list[dict], answer: str, prompt_text: str) -> str:
    """A partial answer's text after the prompt, ending where the answer ends: no end-of-turn."""
    text = _answer_text(template, messages, answer, prompt_text)
    end = text.find(answer)   # the first: the end-of-turn text may hold a short answer again ("m" in <|im_end|>)
    if end < 0:
        raise TemplateError(f"the template does not write the answer as given, so it cannot end it there "
                            f"({PARTIAL})")
    return text[:end + len(answer)]


def render(rows: list[dict], sources: list[str], template: Template) -> tuple[list[dict], list[str]]:
    """Records -> plain-text rows for TRL, and problems (file:line) where the template refuses one."""
    out, problems = [], []
    answers = ("chosen", "rejected") if "chosen" in (rows[0] if rows else {}) else ("completion",)
    for row, where in zip(rows, sources):
        try:
            prompt = template.render_prompt(row["prompt"])
            item = {"prompt": prompt, **{k: (_open_text if k == "rejected" and row.get(PARTIAL) else _answer_text)(
                template, row["prompt"], row[k], prompt) for k in answers}}
        except TemplateError as exc:
            problems.append(f"{where}: {exc}")
            continue
        for key in ("label", PARTIAL):
            if key in row:
                item[key] = row[key]
        out.append(item)
    return out, problems


# ---------------------------------------------------------------- the run's datasets

@dataclass
class PreferenceData:
    """What recipe.py needs of prepared data, for a preference objective (prepare.PreparedData's shape)."""
    train: Any
    validation: Any
    template: Template
    stats: dict[str, Any]
    test_examples: list = field(default_factory=list)


def prepare_preference(data_cfg, objective: str, template: Template) -> PreferenceData:
    """data.train (and data.validation, or a data.val_split share of train) -> datasets of plain
    text for TRL's DPO/ORPO/KTO trainers. Raises DataError listing every bad record."""
    from datasets import Dataset

    kind = KIND_OF[objective]
    files = resolve_files(data_cfg)
    train = load_preference(files["train"], kind)
    raise_problems(train, f"{objective} training data")
    rows, problems = render(train.rows, train.sources, template)
    val_rows: list[dict] = []
    if data_cfg.validation:
        val = load_preference(list(data_cfg.validation), kind)
        raise_problems(val, f"{objective} validation data")
        val_rows, more = render(val.rows, val.sources, template)
        problems += more
    if problems:
        raise DataError(f"{len(problems)} records the template cannot render", problems)
    if not data_cfg.validation and data_cfg.val_split > 0 and len(rows) >= 10:
        order = list(range(len(rows)))
        random.Random(data_cfg.seed).shuffle(order)
        n_val = max(1, round(len(rows) * data_cfg.val_split))
        val_rows = [rows[i] for i in sorted(order[:n_val])]
        rows = [rows[i] for i in sorted(order[n_val:])]
    stats = {"objective": objective, "format": kind, "records": {"train": train.records},
             "examples": {"train": len(rows), "validation": len(val_rows)}, "template": template.name,
             "warnings": []}
    return PreferenceData(Dataset.from_list(rows), Dataset.from_list(val_rows) if val_rows else None,
                          template, stats)


def data_size(dataset, tokenizer, max_length: int):
    """hparams.DataSize of a preference split: one example per record, prompt + chosen (or the
    completion) tokens, so `train.epochs: auto` sizes a preference run as it sizes SFT."""
    answer = "chosen" if "chosen" in dataset.column_names else "completion"
    lengths = [len(tokenizer(p + a, add_special_tokens=False)["input_ids"]) + 1
               for p, a in zip(dataset["prompt"], dataset[answer])]
    return DataSize(len(lengths), sum(lengths), max_length, False, sum(1 for n in lengths if n > max_length // 2))
