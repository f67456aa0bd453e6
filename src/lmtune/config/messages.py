"""pydantic's validation errors on a config as today's messages: one line per key as the user typed
it (dotted), what was given, what is allowed, and a did-you-mean for an unknown key."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import typing
from typing import Any, Literal


_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<="),
           "less_than": ("lt", "<")}


def is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    """Field types without their pydantic annotations: `float | str | None`, `Literal[...]`, a section."""
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    names = {bool: "true/false", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    if typing.get_origin(tp) is list:
        return "a list of strings"
    if typing.get_origin(tp) is Literal:
        return _type_name(str)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return " or ".join(_type_name(a) for a in args) if args else str(tp)


def _unknown(key: str, allowed: list[str]) -> str:
    name = key.rsplit(".", 1)[-1]
    prefix = key[: -len(name)]
    close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
    if not close:  # abbreviations such as `lr` for `learning_rate`
        close = [a for a in allowed if "".join(w[0] for w in a.split("_")) == name or a.startswith(name)][:1]
    hint = f" (did you mean '{prefix}{close[0]}'?)" if close else ""
    return f"{key}: unknown key{hint}; allowed: {', '.join(allowed)}"


def _locate(loc: tuple, raw: dict, root: type) -> tuple[str, type, Any, Any]:
    """The key an error is about, as the user typed it: (dotted key, its section, its type hint
    (None for an unknown key), the value given)."""
    cls, parts, value = root, [], raw
    for part in loc:
        parts.append(str(part))
        value = value.get(part) if isinstance(value, dict) else None
        tp = hints(cls).get(part) if isinstance(part, str) else None
        if tp is None or not is_section(tp):
            break
        cls = tp
    return ".".join(parts), cls, tp, value


def _message(key: str, section: type, tp: Any, value: Any, errors: list[dict]) -> str:
    """One line for one key, from all of pydantic's errors about it (a union reports one per member)."""
    if tp is None:
        return _unknown(key, list(hints(section)))
    if is_section(tp):
        return f"{key}: expected a mapping of keys, got {value!r}"
    kinds = {e["type"]: e for e in errors}
    if "finite_number" in kinds:  # NaN compares false with every bound, inf passes a lone min
        return f"{key}: got {kinds['finite_number']['input']!r}, must be a finite number"
    bound = next((e for e in errors if e["type"] in _BOUNDS), None)
    if bound:
        name, op = _BOUNDS[bound["type"]]
        return f"{key}: got {bound['input']!r}, must be {op} {bound['ctx'][name]}"
    if "not_auto" in kinds:
        return f"{key}: got {value!r} (str), expected a number or auto"
    if "literal_error" in kinds and isinstance(value, str):
        allowed = ", ".join("null" if c is None else str(c) for c in typing.get_args(tp))
        return f"{key}: got {value!r}, allowed: {allowed}"
    return f"{key}: got {value!r} ({type(value).__name__}), expected {_type_name(tp)}"


def _key_order(raw: dict, prefix: str = "") -> list[str]:
    """Every dotted key of `raw`, in the order the user wrote them."""
    keys = []
    for key, value in raw.items():
        keys.append(f"{prefix}{key}")
        if isinstance(value, dict):
            keys += _key_order(value, f"{prefix}{key}.")
    return keys


def problems_by_key(exc: Any, raw: dict, root: type) -> list[str]:
    """pydantic's ValidationError `exc` on `raw` (validated as `root`): one message per key, in the
    order the keys were written (pydantic sorts by field)."""
    by_key: dict[str, tuple[type, Any, Any, list[dict]]] = {}
    for err in exc.errors():
        key, section, tp, value = _locate(err["loc"], raw, root)
        by_key.setdefault(key, (section, tp, value, []))[3].append(err)
    order = {k: i for i, k in enumerate(_key_order(raw))}
    return [_message(key, *found) for key, found in sorted(by_key.items(), key=lambda kv: order.get(kv[0], 0))]
