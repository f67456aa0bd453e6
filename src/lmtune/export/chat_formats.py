"""The run's template written for other runtimes: a Jinja chat template (GGUF's
tokenizer.chat_template, read by llama.cpp, vLLM and transformers) and an Ollama Go template.

Each one renders a conversation to exactly the text lmtune's template (lmtune/data/templates.py)
renders for training and generation; tests/test_one_template.py checks that for all of them.
Newlines are written as {{ '\\n' }} expressions in Jinja because transformers and llama.cpp render
chat templates with trim_blocks, which would eat a newline after a block tag.
"""

from __future__ import annotations

import json

NL = "{{ '\\n' }}"


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
        return template.chat_template
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


def ollama_template(template) -> tuple[str | None, str]:
    """(Go template or None, the layout it follows). A model's own Jinja template is translated
    only when it renders like ChatML on probe conversations; otherwise None (Ollama then falls
    back to its own detection from the GGUF's chat template)."""
    from lmtune.data.templates import ChatMLTemplate

    if template.name == "chatml":
        return OLLAMA_CHATML, "chatml"
    if template.name == "alpaca":
        return OLLAMA_ALPACA, "alpaca"
    if template.name == "raw":
        return OLLAMA_RAW, "raw"
    chatml = ChatMLTemplate(system_prompt=template.system_prompt)
    try:
        same = all(template.render_prompt(p) == chatml.render_prompt(p) for p in _PROBES)
    except Exception:  # the model's template rejects a probe (e.g. no system role): not ChatML
        same = False
    return (OLLAMA_CHATML, "chatml") if same else (None, "model")


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
