"""The run's template written for other runtimes: a Jinja chat template (GGUF's
tokenizer.chat_template, read by llama.cpp, vLLM and transformers) and an Ollama Go template.

Each one renders a conversation to exactly the text lmtune's template (lmtune/data/templates.py)
renders for training and generation; tests/data/test_one_template.py checks that for lmtune's
layouts and tests/export/test_family_templates.py, in token ids, for the families' own templates.
Newlines are written as {{ '\\n' }} expressions in Jinja because transformers and llama.cpp render
chat templates with trim_blocks, which would eat a newline after a block tag.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

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


def jinja_chat_template(template, bos_token: str | None = None) -> str:
    """The template as a Jinja chat template (messages, add_generation_prompt). bos_token: the bos
    text lmtune's prompts start with (the tokenizer's own prefix before lmtune's alpaca, chatml or
    raw layout), written as {{ bos_token }} so that every runtime reading the template starts the
    prompt as lmtune does; a model's own template writes its bos itself."""
    name = template.name
    if name == "model":
        return _GENERATION.sub(lambda m: "{%" + m[1] + (" endif " if m[2] else " if true ") + m[3] + "%}",
                               template.chat_template)
    body = {"chatml": _chatml_jinja, "alpaca": _alpaca_jinja}.get(name, lambda _: RAW_JINJA)(template.system_prompt)
    return ("{{- bos_token }}" + body) if bos_token else body


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


@dataclass
class Layout:
    """A chat template read as: head + for each message prefix(role) + content + suffix(role) + gen.
    A system message is either a turn of its own (roles["system"]), folded into the first user turn
    (folded_system: the text around it, after that turn's prefix; Gemma, Llama 2) or refused (none
    of the two; Mistral's [INST]). default_system: the system text the template writes when the
    conversation has none (Qwen2.5's "You are Qwen..."), then absent from head."""
    head: str
    roles: dict[str, tuple[str, str]]
    gen: str
    folded_system: tuple[str, str] | None = None
    default_system: str | None = None

    def render(self, messages: list[dict[str, str]]) -> str:
        if messages and messages[0]["role"] == "system" and self.folded_system is not None:
            (p_user, s_user), (before, after) = self.roles["user"], self.folded_system
            first, *rest = messages[1:]
            text = p_user + before + messages[0]["content"] + after + first["content"] + s_user
            return self.head + text + "".join(self.roles[m["role"]][0] + m["content"] + self.roles[m["role"]][1]
                                              for m in rest) + self.gen
        if self.default_system is not None and not (messages and messages[0]["role"] == "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        return self.head + "".join(self.roles[m["role"]][0] + m["content"] + self.roles[m["role"]][1]
                                   for m in messages) + self.gen


def _common_prefix(*texts: str) -> str:
    n = 0
    while all(len(t) > n for t in texts) and len({t[n] for t in texts}) == 1:
        n += 1
    return texts[0][:n]


def _at_token_end(tokenizer, text: str, n: int) -> str:
    """text[:n] cut back to the end of a token ("<|end|>\\n<|" -> "<|end|>\\n"): two special tokens
    sharing their first characters must not split a suffix from the next prefix mid-token."""
    try:
        ends = [0] + [end for _, end in tokenizer(text, add_special_tokens=False,
                                                  return_offsets_mapping=True)["offset_mapping"]]
    except Exception:  # a tokenizer without offsets: the characters alone
        return text[:n]
    return text[:max(e for e in ends if e <= n)]


def role_layout(template) -> Layout | None:
    """Read a model chat template's Layout off renders of marker conversations; None for any
    other shape (checked afterwards on real conversations by ollama_template)."""
    def render(messages, gen):
        return template.apply(messages, tokenize=False, add_generation_prompt=gen)

    try:
        x = _split(render([{"role": "user", "content": _A}, {"role": "assistant", "content": _B},
                           {"role": "user", "content": _C}], True), _A, _B, _C)
        y = _split(render([{"role": "user", "content": _A}], False), _A)
        z = _split(render([{"role": "user", "content": _A}, {"role": "assistant", "content": _B}], False), _A, _B)
    except Exception:  # e.g. a template that refuses a lone user turn
        return None
    if None in (x, y, z):
        return None
    # after the last message a finished chat may carry a tail (Phi-3's eos): the user suffix is
    # what the finished chat and both continuations share
    s_user = _at_token_end(template.tokenizer, y[1], len(_common_prefix(y[1], x[1], x[3])))
    tail = y[1][len(s_user):]
    if not z[2].endswith(tail) or x[0] != y[0]:
        return None
    s_asst = z[2][:len(z[2]) - len(tail)]
    if not x[2].startswith(s_asst):
        return None
    p_asst, p_user, gen = x[1][len(s_user):], x[2][len(s_asst):], x[3][len(s_user):]
    if not x[0].endswith(p_user):
        return None
    layout = Layout(x[0][:len(x[0]) - len(p_user)], {"user": (p_user, s_user), "assistant": (p_asst, s_asst)}, gen)
    _read_system(layout, render, x[0])
    return layout


def _read_system(layout: Layout, render, first_user: str) -> None:
    try:
        w = _split(render([{"role": "system", "content": _A}, {"role": "user", "content": _B}], True), _A, _B)
    except Exception:  # the template refuses system messages (Mistral): none in the layout
        return
    if w is None:
        return
    p_user, s_user = layout.roles["user"]
    if w[0].startswith(first_user):              # folded into the first user turn
        layout.folded_system = (w[0][len(first_user):], w[1])
    elif w[1].endswith(p_user) and w[0].startswith(layout.head):   # a turn of its own
        layout.roles = {"system": (w[0][len(layout.head):], w[1][:len(w[1]) - len(p_user)]), **layout.roles}
    elif w[1].endswith(p_user) and layout.head.startswith(w[0]):   # ... and a default one in the head
        s_sys = w[1][:len(w[1]) - len(p_user)]
        if layout.head.endswith(s_sys):
            layout.default_system = layout.head[len(w[0]):len(layout.head) - len(s_sys)]
            layout.roles = {"system": (w[0], s_sys), **layout.roles}
            layout.head = ""


def _layout_go(layout: Layout, bos: str | None) -> str | None:
    """The Layout as an Ollama Go template; bos: the leading bos text to leave out (Ollama adds
    the bos itself when the GGUF says add_bos), in the head or before the first user turn. None
    when a piece would break the Go template or the bos sits where it cannot be left out."""
    head, (p_user, s_user) = layout.head, layout.roles["user"]
    parts, user_go, user_end = [], p_user, ""
    if bos and head.startswith(bos):
        head = head[len(bos):]
    elif bos:
        # a bos before every user turn (Llama 2): every one but the first, which Ollama adds
        if head or not p_user.startswith(bos) or "system" in layout.roles:
            return None
        parts.append('{{ $later := "" }}')
        user_go, user_end = f"{{{{ if $later }}}}{bos}{{{{ end }}}}{p_user[len(bos):]}", '{{ $later = "1" }}'
    parts.insert(0, head)
    if layout.folded_system is not None:
        before, after = layout.folded_system
        parts.append('{{ $system := "" }}')
        user = (f'{user_go}{{{{ if $system }}}}{before}{{{{ $system }}}}{after}{{{{ $system = "" }}}}{{{{ end }}}}'
                f'{{{{ .Content }}}}{s_user}{user_end}')
        branches = {"system": "{{ $system = .Content }}", "user": user}
    else:
        branches = {role: f"{prefix}{{{{ .Content }}}}{suffix}" for role, (prefix, suffix) in layout.roles.items()
                    if role != "assistant"}
        branches["user"] = f"{user_go}{{{{ .Content }}}}{s_user}{user_end}"
    if layout.default_system is not None:   # the system turn always comes first; .System is Ollama's system text
        p_sys, s_sys = layout.roles["system"]
        parts.append(f"{p_sys}{{{{ if .System }}}}{{{{ .System }}}}{{{{ else }}}}{layout.default_system}"
                     f"{{{{ end }}}}{s_sys}")
        del branches["system"]
    p_asst, s_asst = layout.roles["assistant"]
    branches["assistant"] = f"{p_asst}{{{{ .Content }}}}{s_asst}"
    parts.append("{{ range .Messages }}")
    parts += [f'{{{{ if eq .Role "{role}" }}}}{body}{{{{ end }}}}' for role, body in branches.items()]
    go = "".join(parts) + "{{ end }}" + layout.gen
    pieces = [head, layout.gen, *(p for pair in layout.roles.values() for p in pair), *(layout.folded_system or ()),
              layout.default_system or ""]
    return None if any("{{" in p or '"""' in p for p in pieces) else go


def ollama_template(template, bos: str | None = None) -> tuple[str | None, str]:
    """(Go template or None, the layout it follows). A model's own Jinja template is translated
    when role_layout reads it, checked on probe conversations against lmtune's own rendering;
    otherwise None (Ollama then falls back to its own detection from the GGUF's chat template).
    bos: see _layout_go."""
    if template.name == "chatml":
        return OLLAMA_CHATML, "chatml"
    if template.name == "alpaca":
        return OLLAMA_ALPACA, "alpaca"
    if template.name == "raw":
        return OLLAMA_RAW, "raw"

    def same_as(render, probes) -> bool:
        try:
            return all(template.render_prompt(p) == render(template._with_system(p)) for p in probes)
        except Exception:  # the model's template rejects a probe
            return False

    layout = role_layout(template)
    if layout is not None:
        takes_system = "system" in layout.roles or layout.folded_system is not None
        probes = [p for p in _PROBES if takes_system or p[0]["role"] != "system"]
        if same_as(layout.render, probes):
            go = _layout_go(layout, bos)
            if go is not None:
                return go, "role-wrapped"
    chatml = ChatMLTemplate()
    if same_as(chatml.render_prompt, _PROBES):
        return OLLAMA_CHATML, "chatml"
    return None, "model"


def modelfile(gguf_name: str, template, stops: list[str], context: int, bos: str | None = None) -> str:
    """An Ollama Modelfile next to the GGUF: FROM, TEMPLATE, SYSTEM, stop and context parameters.
    bos: the bos text the GGUF has llama.cpp/Ollama add (add_bos), left out of the Go template."""
    go, layout = ollama_template(template, bos)
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
