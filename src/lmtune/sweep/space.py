"""`--param` specs -> a validated search space, before any trial starts.

    KEY=v1,v2,...        a list of values (categorical; with lists only the sweep is a grid)
    KEY=lo:hi[:log]      a numeric range (an integer range for integer keys such as lora.r)

Keys are the config's own dotted keys (`lmtune config show --explain`). Every value, and both ends
of every range, is checked by building the config with it, so a sweep never starts a trial whose
config `lmtune train` would refuse. Light to import: standard library, PyYAML and lmtune.config.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass
from typing import Any

import yaml

from lmtune.config import Config, ConfigError, explain, load_config

# Keys a trial must own: each trial is its own run directory, in one process.
RESERVED = ("output.", "distributed.")


@dataclass
class Param:
    key: str
    kind: str                          # "choice" | "int" | "float"
    choices: list | None = None        # scalars (numbers, strings, booleans, None) for "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    spec: str = ""                     # as the user typed it (stored with the study)

    def suggest(self, trial) -> Any:
        """The value an Optuna trial picks for this parameter."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, self.choices)
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, log=self.log)

    def override(self, value: Any) -> str:
        """`key=value` in the override syntax `lmtune train` reads."""
        return f"{self.key}={format_value(value)}"


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def _field_type(key: str) -> Any:
    """The annotated type of a dotted config key (None when the key is unknown or a section)."""
    cls: Any = Config
    parts = key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        tp = hints[part]
        is_section = isinstance(tp, type) and dataclasses.is_dataclass(tp)
        if i == len(parts) - 1:
            return None if is_section else tp
        if not is_section:
            return None
        cls = tp
    return None


def _numeric_kind(tp: Any) -> str | None:
    # `float | str` is a number that may also say `auto` (train.learning_rate, train.epochs): a range
    # of it is a range of numbers
    members = set(typing.get_args(tp)) - {type(None), str} or {tp}
    if members == {int}:
        return "int"
    if members == {float}:
        return "float"
    return None


def _split_top_level(text: str) -> list[str]:
    """`a,[b,c],d` -> ['a', '[b,c]', 'd']: commas inside brackets belong to a YAML list value."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    return out + [cur]


def _scalar(text: str) -> Any:
    """A list value as Optuna stores it: numbers, booleans and None as such, anything else (strings,
    YAML lists such as `[q_proj,v_proj]`) as its text."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value)   # YAML 1.1 reads 2e-4 as a string
        except ValueError:
            return text
    return value if value is None or isinstance(value, (bool, int, float)) else text


def _parse_one(spec: str, allowed: list[str], problems: list[str]) -> Param | None:
    key, sep, body = spec.partition("=")
    key = key.strip()
    if not sep or not key or not body.strip():
        problems.append(f"--param {spec!r}: expected KEY=v1,v2,... or KEY=lo:hi[:log] "
                        "(e.g. lora.r=8,16,32 or train.learning_rate=1e-4:3e-3:log)")
        return None
    if key not in allowed:
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        problems.append(f"--param {key}: unknown config key{hint}; `lmtune config show --explain` lists them")
        return None
    if key.startswith(RESERVED):
        problems.append(f"--param {key}: the sweep sets {key.split('.')[0]}.* for each trial itself; "
                        "sweep training, data, method, lora or eval keys")
        return None
    parts = body.split(":")
    if not body.lstrip().startswith(("[", "{")) and len(parts) in (2, 3):
        return _parse_range(key, spec, parts, problems)
    choices = [_scalar(v.strip()) for v in _split_top_level(body)]
    if any(isinstance(v, str) and v == "" for v in choices):
        problems.append(f"--param {spec!r}: an empty value in the list")
        return None
    return Param(key, "choice", choices=list(dict.fromkeys(choices)), spec=spec)


def _parse_range(key: str, spec: str, parts: list[str], problems: list[str]) -> Param | None:
    kind = _numeric_kind(_field_type(key))
    if kind is None:
        problems.append(f"--param {spec!r}: a range needs a numeric key; {key} is not a number "
                        f"(give a list: {key}=a,b,c)")
        return None
    if len(parts) == 3 and parts[2].strip() != "log":
        problems.append(f"--param {spec!r}: the third part of a range can only be 'log'")
        return None
    try:
        lo, hi = (int(p) if kind == "int" else float(p) for p in parts[:2])
    except ValueError:
        what = "integers" if kind == "int" else "numbers"
        problems.append(f"--param {spec!r}: lo and hi must be {what}")
        return None
    log = len(parts) == 3
    if lo >= hi:
        problems.append(f"--param {spec!r}: lo ({lo}) must be below hi ({hi})")
        return None
    if log and lo <= 0:
        problems.append(f"--param {spec!r}: a log range must stay above 0 (got lo={lo}); "
                        "start it at a small positive value")
        return None
    if not (math.isfinite(lo) and math.isfinite(hi)):
        problems.append(f"--param {spec!r}: lo and hi must be finite")
        return None
    return Param(key, kind, low=lo, high=hi, log=log, spec=spec)


def parse_params(specs: list[str], config: str, overrides: list[str]) -> list[Param]:
    """Parse and validate every --param; raise ConfigError listing every problem."""
    allowed = [k for k, _, _ in explain()]
    problems: list[str] = []
    params = [p for p in (_parse_one(s, allowed, problems) for s in specs) if p is not None]
    keys = [p.key for p in params]
    for dup in sorted({k for k in keys if keys.count(k) > 1}):
        problems.append(f"--param {dup}: given more than once")
    if not specs:
        problems.append("no --param given: name at least one key to sweep, e.g. --param lora.r=8,16,32")
    _check_values(params, config, overrides, problems)
    if problems:
        raise ConfigError("sweep: bad --param", problems)
    return params


def _check_values(params: list[Param], config: str, overrides: list[str], problems: list[str]) -> None:
    """Build the config with each list value and each range end, so bad values fail now."""
    for p in params:
        values = p.choices if p.kind == "choice" else [p.low, p.high]
        for v in values:
            try:
                load_config(config, [*overrides, p.override(v)])
            except ConfigError as exc:
                problems += [f"--param {p.spec}: {msg}" for msg in exc.problems] or [str(exc)]


def grid_space(params: list[Param]) -> dict[str, list] | None:
    """The Cartesian grid when every parameter is a list, else None (TPE samples ranges)."""
    if all(p.kind == "choice" for p in params):
        return {p.key: list(p.choices) for p in params}
    return None
