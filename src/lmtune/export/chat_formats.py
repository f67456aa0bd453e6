"""The run's template written for other runtimes: a Jinja chat template (GGUF's
tokenizer.chat_template, read by llama.cpp, vLLM and transformers) and an Ollama Go template.

Each one renders a conversation to exactly the text lmtune's template (lmtune/data/templates.py)
renders for training and generation; tests/data/test_one_template.py checks that for all of them.
Newlines are written as {{ '\\n' }} expressions in Jinja because transformers and llama.cpp render
chat templates with trim_blocks, which would eat a newline after a block tag.
"""

from __future__ import annotations

import json
import re

from lmtune.data.templates import ChatMLTemplate

NL = "{{ '\\n' }}"
# {% generation %} blocks mark trained tokens for TRL; runtimes other than transformers do not know
# the tag. An always-true `if` with the same whitespace control renders the same text everywhere.
_GENERATION = re.compile(r"\{%(-?)\s*(end)?generation\s*(-?)%\}")


def _jinja_str(text: str) -> str:
    return json.dumps(text)  # a Jinja string literal takes the same escapes as JSON's


def _chatml_jinja(system_prompt: str | None) -> str:
    head = "{%- set msgs = messages %}"
    if system_prompt:
        head = ("{%- if messages and messages[0]['role'] == 'system' %}{% set msgs = messages %}{% else %}"
                "{% set msgs = [{'role': 'system', 'content': " + _jinja_str(system_prompt) + "}] + messages %}"
                "{% endif %}")
    return (head + "{%- for m in msgs %}{% if not loop.first %}" + NL + "{% endif %}"
            "<|im_start|>{{ m['role'] }}" + NL + "{{ m['content'] }}<|im_end|>{% endfor %}"
            "{%- if add_generation_prompt %}{% if msgs %}" + NL + "{% endif %}<|im_start|>assistant" + NL
            + "{% endif %}")


def _alpaca_jinja(system_prompt: str | None) -> str:
    return ("{%- set ns = namespace(system=" + _jinja_str(system_prompt or "") + ") %}"
            "{%- for m in messages %}"
            "{%- if m['role'] == 'system' %}{% set ns.system = m['content'] %}"
            "{%- elif m['role'] == 'user' %}{% if ns.system | trim %}{{ ns.system }}" + NL + NL + "{% endif %}"
            "### Instruction:" + NL + "{{ m['content'] }}" + NL + NL + "### Response:" + NL +
            "{%- elif m['role'] == 'assistant' %}{{ m['content'] }}{% endif %}"
            "{%- endfor %}")


RAW_JINJA = "{%- for m in messages %}{{ m['content'] }}{% endfor %}"


def jinja_chat_template(template) -> str:
    """The template as a Jinja chat template (messages, add_generation_prompt)."""
    name = template.name
    if name == "model":
        return _GENERATION.sub(lambda m: "{%" + m[1] + (" endif " if m[2] else " if true ") + m[3] + "%}",
                               template.chat_template)
    if name == "chatml":
        return _chatml_jinja(template.system_prompt)
    if name == "alpaca":
        return _alpaca_jinja(template.system_prompt)
    return RAW_JINJA


# Ollama renders Go templates (text/template) with .Messages (each .Role, .Content) or the
# single-turn .System / .Prompt; a Modelfile SYSTEM line becomes the system message.
OLLAMA_CHATML = ("{{ range $i, $m := .Messages }}{{ if $i }}\n{{ end }}<|im_start|>{{ $m.Role }}\n"
                 "{{ $m.Content }}<|im_end|>{{ end }}\n<|im_start|>assistant\n")
OLLAMA_ALPACA = "{{ if .System }}{{ .System }}\n\n{{ end }}### Instruction:\n{{ .Prompt }}\n\n### Response:\n"
OLLAMA_RAW = "{{ .Prompt }}"

_PROBES = [
    [{"role": "user", "content": "Hi"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a city."}],
    [{"role": "user", "content": "a\nb"}, {"role": "assistant", "content": "c"}, {"role": "user", "content": "d"}],
]
_A, _B, _C = "\ue000A\ue000", "\ue000B\ue000", "\ue000C\ue000"  # private-use markers: never in a template


def _split(text: str, *marks: str) -> list[str] | None:
    """text around each mark, in order; None when a mark is missing or repeated."""
    pieces = []
    for mark in marks:
        if text.count(mark) != 1:
            return None
        head, text = text.split(mark)
        pieces.append(head)
    return pieces + [text]


def role_layout(template) -> tuple[str, dict[str, tuple[str, str]], str] | None:
    """A model chat template that wraps each message as prefix(role) + content + suffix(role),
    after a fixed head and before a generation prompt: (head, {role: (prefix, suffix)}, generation
    prompt), read off renders of marker conversations. None for any other shape."""
    def render(messages, gen):
        return template.apply(messages, tokenize=False, add_generation_prompt=gen)

    try:
        x = _split(render([{"role": "user", "content": _A}, {"role": "assistant", "content": _B},
                           {"role": "user", "content": _C}], True), _A, _B, _C)
        y = _split(render([{"role": "user", "content": _A}], False), _A)
        z = _split(render([{"role": "user", "content": _A}, {"role": "assistant", "content": _B}], False), _A, _B)
        w = _split(render([{"role": "system", "content": _A}, {"role": "user", "content": _B}], True), _A, _B)
    except Exception:  # e.g. a template that refuses a system message or a lone user turn
        return None
    if None in (x, y, z) or not x[3].startswith(y[1]) or not x[1].startswith(y[1]) or not x[2].startswith(z[2]):
        return None
    s_user, s_asst = y[1], z[2]
    p_asst, p_user, gen = x[1][len(s_user):], x[2][len(s_asst):], x[3][len(s_user):]
    if not x[0].endswith(p_user):
        return None
    head = x[0][:len(x[0]) - len(p_user)]
    roles = {"user": (p_user, s_user), "assistant": (p_asst, s_asst)}
    if w is not None and w[0].startswith(head) and w[1].endswith(p_user):
        roles["system"] = (w[0][len(head):], w[1][:len(w[1]) - len(p_user)])
    return head, roles, gen


def _layout_go(head: str, roles: dict[str, tuple[str, str]], gen: str) -> str | None:
    parts = [head, "{{ range .Messages }}"]
    for role, (prefix, suffix) in roles.items():
        parts.append(f'{{{{ if eq .Role "{role}" }}}}{prefix}{{{{ .Content }}}}{suffix}{{{{ end }}}}')
    go = "".join(parts) + "{{ end }}" + gen
    pieces = [head, gen, *(p for pair in roles.values() for p in pair)]
    return None if any("{{" in p or '"""' in p for p in pieces) else go


def _render_layout(head, roles, gen, messages) -> str:
    return head + "".join(roles[m["role"]][0] + m["content"] + roles[m["role"]][1] for m in messages) + gen


def ollama_template(template) -> tuple[str | None, str]:
    """(Go template or None, the layout it follows). A model's own Jinja template is translated
    when it is role-wrapped (role_layout) or renders like ChatML, checked on probe conversations
    against lmtune's own rendering; otherwise None (Ollama then falls back to its own detection
    from the GGUF's chat template)."""
    if template.name == "chatml":
        return OLLAMA_CHATML, "chatml"
    if template.name == "alpaca":
        return OLLAMA_ALPACA, "alpaca"
    if template.name == "raw":
        return OLLAMA_RAW, "raw"

    def same_as(render) -> bool:
        try:
            return all(template.render_prompt(p) == render(template._with_system(p)) for p in _PROBES)
        except Exception:  # the model's template rejects a probe (e.g. no system role)
            return False

    layout = role_layout(template)
    if layout is not None and set(layout[1]) >= {"system", "user", "assistant"} \
            and same_as(lambda msgs: _render_layout(*layout, msgs)):
        go = _layout_go(*layout)
        if go is not None:
            return go, "role-wrapped"
    chatml = ChatMLTemplate()
    if same_as(chatml.render_prompt):
        return OLLAMA_CHATML, "chatml"
    return None, "model"


def modelfile(gguf_name: str, template, stops: list[str], context: int) -> str:
    """An Ollama Modelfile next to the GGUF: FROM, TEMPLATE, SYSTEM, stop and context parameters."""
    go, layout = ollama_template(template)
    lines = [f"# Written by lmtune export (template: {template.name}, Ollama layout: {layout}).",
             "# ollama create NAME -f Modelfile && ollama run NAME", f"FROM ./{gguf_name}"]
    if go is None:
        lines.append("# No TEMPLATE: lmtune cannot translate this chat template to Go; Ollama reads the GGUF's.")
    else:
        lines.append(f'TEMPLATE """{go}"""')
    if template.system_prompt:
        lines.append(f'SYSTEM """{template.system_prompt}"""')
    for stop in stops:
        # Modelfile strings have no escapes for newlines: a stop is matched on its visible text.
        lines.append(f"PARAMETER stop {json.dumps(stop.strip(), ensure_ascii=False)}")
    lines += ["PARAMETER temperature 0", f"PARAMETER num_ctx {context}", ""]
    return "\n".join(lines)
