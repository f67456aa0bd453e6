"""Record formats: detect which one a dataset uses, validate every record, normalise to `Example`.

  alpaca             {"instruction", "input" (optional), "output"}   (optional "system")
  chat               {"messages": [{"role": system|user|assistant, "content"}, ...]}
                     or ShareGPT {"conversations": [{"from": human|gpt|system, "value"}, ...]}
  prompt_completion  {"prompt", "completion"}   (raw text; the prompt is not trained)
  text               {"text"}                   (raw text; everything is trained)

Every problem reads `where: what is wrong (field)`, e.g. `data.jsonl:7: empty string (output)`.
A dataset has one format; with format=auto it is the format of most records, and records of another
format are reported as mixed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from lmtune.data.readers import FileInfo, Record, _type_name

FORMATS = ("alpaca", "chat", "prompt_completion", "text")
ROLES = ("system", "user", "assistant")
# ShareGPT speaker names -> roles. Some exports already use user/assistant in "from".
SHAREGPT_ROLES = {"human": "user", "gpt": "assistant", "system": "system", "user": "user",
                  "assistant": "assistant"}
# Columns a tabular file (CSV, Parquet) must have, per format; chat needs one of the two.
REQUIRED_COLUMNS = {"alpaca": ("instruction", "output"), "chat": ("messages|conversations",),
                    "prompt_completion": ("prompt", "completion"), "text": ("text",)}
_STRING_TYPES = ("string", "large_string", "string_view", "null")


@dataclass
class Example:
    """One validated training example, whatever its file format.

    `messages` is set for alpaca, chat and prompt_completion (alpaca/prompt_completion become one
    user turn and one assistant turn) so chat templates can render them; `text` is set for plain
    text. `fields` keeps the record's own fields (alpaca: instruction, input, output) so the alpaca
    template reproduces the exact layout."""

    source: str
    format: str
    messages: list[dict[str, str]] | None = None
    text: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def response(self) -> str:
        """The answer the model learns: the last assistant turn (or the whole text)."""
        if self.messages is None:
            return self.text or ""
        return next((m["content"] for m in reversed(self.messages) if m["role"] == "assistant"), "")

    def prompt_messages(self) -> list[dict[str, str]]:
        """The conversation up to (not including) the final assistant answer: what generation sees.
        A conversation that ends with a user turn (a chat in progress) is all prompt."""
        messages = self.messages or []
        if messages and messages[-1]["role"] == "assistant":
            return messages[:-1]
        return list(messages)

    def content_key(self) -> str:
        """A hash of the normalised content: equal for exact duplicates up to whitespace."""
        return _digest(self._parts())

    def prompt_key(self) -> str:
        """A hash of everything but the final answer, to find one prompt with several answers."""
        return _digest(self._parts()[:-1])

    def _parts(self) -> list[str]:
        if self.format == "alpaca":
            return [self.fields.get("system", ""), self.fields["instruction"], self.fields["input"],
                    self.fields["output"]]
        if self.format == "prompt_completion":
            return [self.fields["prompt"], self.fields["completion"]]
        if self.messages is None:
            return ["", self.text or ""]
        return [f"{m['role']}:{m['content']}" for m in self.messages]

    def keys(self) -> tuple[str, str]:
        """(content_key(), prompt_key()), normalising the text once."""
        normalised = _normalise(self._parts())
        return _hash(normalised), _hash(normalised[:-1])


def _normalise(parts: list[str]) -> list[str]:
    # str.split() splits on exactly the characters re's \s matches (both use Py_UNICODE_ISSPACE), so
    # this equals re.sub(r"\s+", " ", p).strip(), at a third of the cost
    return [" ".join(p.split()) for p in parts]


def _hash(normalised: list[str]) -> str:
    return hashlib.sha1(json.dumps(normalised, ensure_ascii=False).encode()).hexdigest()


def _digest(parts: list[str]) -> str:
    return _hash(_normalise(parts))


@dataclass
class LoadedData:
    examples: list[Example]
    format: str | None  # None when nothing could be detected
    records: int  # records read, good and bad
    problems: list[str]
    files: list[FileInfo]


def guess_format(value: dict[str, Any]) -> str | None:
    """The format a record looks like from its keys (the most specific signature wins)."""
    keys = set(value)
    if keys & {"messages", "conversations"}:
        return "chat"
    if keys & {"instruction", "output"}:
        return "alpaca"
    if keys & {"prompt", "completion"}:
        return "prompt_completion"
    if "text" in keys:
        return "text"
    return None


def other_format_files(per_file: dict[str, Counter], fmt: str, problems: list[str]) -> set[str]:
    """From format counts per file: the files entirely in a format other than `fmt`, each reported
    once (records.py calls this with the counts its streamed pass kept)."""
    other = set()
    for file, counts in per_file.items():
        if len(counts) == 1 and next(iter(counts)) not in (fmt, None):
            n, kind = sum(counts.values()), next(iter(counts))
            problems.append(f"{file}: mixed formats: all {n} records of this file are {kind}, most "
                            f"records are {fmt} (use one format per dataset)")
            other.add(file)
    return other


def _check_schemas(files: list[FileInfo], fmt: str, problems: list[str]) -> set[str]:
    """A tabular file missing a column (or with a non-text column) fails once, not once per row."""
    bad = set()
    for info in files:
        if info.columns is None:
            continue
        found = ", ".join(info.columns) or "none"
        missing = [c for c in REQUIRED_COLUMNS[fmt] if not any(a in info.columns for a in c.split("|"))]
        if missing:
            needs = ", ".join(REQUIRED_COLUMNS[fmt]).replace("|", " or ")
            problems.append(f"{info.header_where}: missing column(s) {', '.join(missing)} ({fmt} data "
                            f"needs {needs}; found: {found})")
            bad.add(info.path)
            continue
        text_cols = [c for c in (*REQUIRED_COLUMNS[fmt], "input", "system") if c in info.columns
                     and "|" not in c]
        for col in text_cols:
            if info.columns[col] not in _STRING_TYPES:
                problems.append(f"{info.header_where}: column '{col}' has type {info.columns[col]}, "
                                f"expected string")
                bad.add(info.path)
    return bad


# ------------------------------------------------------------------ per-format validation

def to_example(record: Record, fmt: str) -> tuple[Example | None, list[str]]:
    """Validate one record as `fmt`; return the Example (None if invalid) and its problems."""
    problems: list[str] = []
    check = {"alpaca": _alpaca, "chat": _chat, "prompt_completion": _prompt_completion,
             "text": _text_record}[fmt]
    example = check(record, problems)
    return (None if problems else example), problems


def _string(value: dict, key: str, where: str, problems: list[str], *, label: str | None = None,
            optional: bool = False) -> str:
    """Read a required, non-empty string field; optional fields may be absent, null or empty."""
    label = label or key
    if key not in value:
        if not optional:
            problems.append(f"{where}: missing field ({label})")
        return ""
    item = value[key]
    if item is None:
        if not optional:
            problems.append(f"{where}: null value, expected a string ({label})")
        return ""
    if not isinstance(item, str):
        problems.append(f"{where}: expected a string, got {_type_name(item)} ({label})")
        return ""
    if not optional and not item.strip():
        problems.append(f"{where}: empty string ({label})")
    return item


def _alpaca(record: Record, problems: list[str]) -> Example:
    v, where = record.value, record.source
    instruction = _string(v, "instruction", where, problems)
    input_text = _string(v, "input", where, problems, optional=True)
    output = _string(v, "output", where, problems)
    system = _string(v, "system", where, problems, optional=True)
    user = f"{instruction}\n\n{input_text}" if input_text.strip() else instruction
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    if system.strip():
        messages.insert(0, {"role": "system", "content": system})
    fields = {**v, "instruction": instruction, "input": input_text, "output": output, "system": system}
    return Example(where, "alpaca", messages=messages, fields=fields)


def _prompt_completion(record: Record, problems: list[str]) -> Example:
    v, where = record.value, record.source
    prompt = _string(v, "prompt", where, problems)
    completion = _string(v, "completion", where, problems)
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]
    fields = {**v, "prompt": prompt, "completion": completion}
    return Example(where, "prompt_completion", messages=messages, fields=fields)


def _text_record(record: Record, problems: list[str]) -> Example:
    text = _string(record.value, "text", record.source, problems)
    return Example(record.source, "text", text=text, fields=dict(record.value))


def _chat(record: Record, problems: list[str]) -> Example:
    v, where = record.value, record.source
    sharegpt = "messages" not in v and "conversations" in v
    key, role_key, content_key = ("conversations", "from", "value") if sharegpt else ("messages", "role", "content")
    if key not in v:
        problems.append(f"{where}: missing field (messages)")
        return Example(where, "chat")
    turns = v[key]
    if isinstance(turns, str) and turns.lstrip().startswith("["):  # JSON inside a CSV/Parquet cell
        try:
            turns = json.loads(turns)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: malformed JSON in the cell: {exc.msg} ({key})")
            return Example(where, "chat")
    if not isinstance(turns, list):
        problems.append(f"{where}: expected a list of messages, got {_type_name(turns)} ({key})")
        return Example(where, "chat")
    if not turns:
        problems.append(f"{where}: empty conversation ({key})")
        return Example(where, "chat")
    allowed = SHAREGPT_ROLES if sharegpt else {r: r for r in ROLES}
    messages = []
    for i, turn in enumerate(turns):
        at = f"{key}[{i}]"
        if not isinstance(turn, dict):
            problems.append(f"{where}: expected an object with {role_key} and {content_key}, got "
                            f"{_type_name(turn)} ({at})")
            continue
        role = _role(turn, role_key, allowed, where, f"{at}.{role_key}", problems)
        content = _string(turn, content_key, where, problems, label=f"{at}.{content_key}")
        if role == "system" and i > 0:
            problems.append(f"{where}: a system message must come first ({at}.{role_key})")
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in messages) and not problems:
        problems.append(f"{where}: no assistant turn, nothing to train on ({key})")
    fields = {k: val for k, val in v.items() if k not in ("messages", "conversations")}
    return Example(where, "chat", messages=messages, fields=fields)


def _role(turn: dict, role_key: str, allowed: dict[str, str], where: str, label: str,
          problems: list[str]) -> str:
    role = turn.get(role_key)
    if role_key not in turn:
        problems.append(f"{where}: missing field ({label})")
    elif not isinstance(role, str):
        problems.append(f"{where}: expected a string, got {_type_name(role)} ({label})")
    elif role not in allowed:
        problems.append(f"{where}: unknown role '{role}', allowed: {', '.join(allowed)} ({label})")
    else:
        return allowed[role]
    return ""


# ------------------------------------------------------------------ ordering

def sort_problems(problems: list[str], files: list[FileInfo]) -> list[str]:
    """Order problems as they appear: by file (in reading order), then line/item/row number."""
    order = sorted(((f.path, i) for i, f in enumerate(files)), key=lambda t: -len(t[0]))

    def key(problem: str) -> tuple[int, int]:
        for path, index in order:
            if problem.startswith(path + ":"):
                m = re.match(r"(?:item |row )?(\d+):", problem[len(path) + 1:])
                return index, int(m.group(1)) if m else -1
        return -1, -1

    return sorted(problems, key=key)
