"""Render the subset of Go's text/template that lmtune's Modelfiles use, the way Ollama fills it:
`{{ range $i, $m := .Messages }}`, `{{ range .Messages }}`, `{{ if X }}`, `{{ if eq X "text" }}`, `{{ else }}`,
`{{ end }}`, variables (`{{ $x := "" }}`, `{{ $x = .Content }}`, `{{ if $x }}`) and the
fields .System, .Prompt, .Role, .Content, $m.Role, $m.Content. Go itself is not installed here;
anything outside the subset raises, so a Modelfile that grows past it fails the test loudly."""

from __future__ import annotations

import re

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _parse(template: str):
    root: list = []
    stack = [root]
    pos = 0
    for m in _ACTION.finditer(template):
        text = template[pos:m.start()]
        if m[1]:
            text = text.rstrip()
        stack[-1].append(("text", text))
        pos = m.end()
        action = m[2]
        if action.startswith(("range ", "if ")):
            node = (action.split(" ", 1)[0], action.split(" ", 1)[1], [])
            stack[-1].append(node)
            stack.append(node[2])
        elif action == "end":
            stack.pop()
        elif action == "else":
            stack[-1].append(("else",))
        elif re.fullmatch(r"\$\w+\s*:?=\s*(\.\w+|\$\w+|\"[^\"]*\")", action):
            var, _, expr = action.partition("=")
            stack[-1].append(("assign", var.rstrip(":").strip(), expr.strip()))
        elif re.fullmatch(r"(\$\w+)?\.\w+|\$\w+", action):
            stack[-1].append(("field", action))
        else:
            raise ValueError(f"Go template action outside the tested subset: {action!r}")
        if m[3]:
            rest = template[pos:]
            pos += len(rest) - len(rest.lstrip())
    stack[-1].append(("text", template[pos:]))
    return root


def _value(expr: str, scope: dict):
    if expr.startswith('"'):
        return expr[1:-1]
    if re.fullmatch(r"\$\w+", expr) and expr not in scope:
        return scope["vars"][expr]   # a variable made by := (assignments reach it from any depth)
    var, _, field = expr.partition(".") if expr.startswith("$") else ("", "", expr[1:])
    obj = scope[var] if var else scope["."]
    return obj[field] if field else obj


def _run(nodes, scope) -> str:
    out = []
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "assign":
            scope["vars"][node[1]] = _value(node[2], scope)
        elif kind == "field":
            out.append(str(_value(node[1], scope)))
        elif kind == "if":
            cond = re.fullmatch(r'eq (\S+) "([^"]*)"', node[1])
            body = node[2]
            cut = next((i for i, n in enumerate(body) if n[0] == "else"), len(body))
            if (_value(cond[1], scope) == cond[2]) if cond else _value(node[1], scope):
                out.append(_run(body[:cut], scope))
            else:
                out.append(_run(body[cut + 1:], scope))
        elif kind == "range":
            head = node[1]
            names, _, source = head.rpartition(":=") if ":=" in head else ("", "", head)
            items = _value(source.strip(), scope)
            idx_name, _, item_name = [n.strip() for n in names.partition(",")] if names else ("", "", "")
            for i, item in enumerate(items):
                inner = {**scope, ".": item}
                if item_name:
                    inner[idx_name], inner[item_name] = i, item
                out.append(_run(node[2], inner))
    return "".join(out)


def render(template: str, messages: list[dict], system: str | None = None) -> str:
    """Ollama's data for a chat request: the Modelfile SYSTEM becomes a first system message when
    the request has none; .System is the system text, .Prompt the last user message."""
    msgs = [dict(m) for m in messages]
    if system and (not msgs or msgs[0]["role"] != "system"):
        msgs.insert(0, {"role": "system", "content": system})
    data = {"Messages": [{"Role": m["role"], "Content": m["content"]} for m in msgs],
            "System": next((m["content"] for m in msgs if m["role"] == "system"), ""),
            "Prompt": next((m["content"] for m in reversed(msgs) if m["role"] == "user"), "")}
    scope = {".": data, "vars": {}}
    return _run(_parse(template), scope)
