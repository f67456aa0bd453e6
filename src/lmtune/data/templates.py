"""Prompt templates: how an example becomes text, and which part of that text is trained.

  alpaca   "### Instruction:\\n{instruction}\\n\\n### Input:\\n{input}\\n\\n### Response:\\n{output}"
           (the Input block is left out when input is empty; the eos token ends the response)
  chatml   "<|im_start|>{role}\\n{content}<|im_end|>" per message, joined by "\\n"
  model    the tokenizer's own chat template (apply_chat_template)
  raw      prompt_completion and text data: the text as it is (internal; `auto` picks it)

A template gives `segments(example)` (text pieces marked trained or not; the eos token is added by
tokenization, see tokenize.py) and `render_prompt(item)` (the text up to where the answer starts,
for generation). `to_dict()`/`template_from_dict()` let a run save the template (template.json) so
generation and evaluation reload exactly the one the model was trained with.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lmtune.data.formats import Example, guess_format, to_example
from lmtune.data.readers import Record
from lmtune.errors import ConfigError

TEMPLATE_NAMES = ("auto", "alpaca", "chatml", "model")
GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")
_VERSION = 1


class TemplateError(ValueError):
    """This template cannot render this example (tokenization reports it with the example's source)."""


@dataclass(frozen=True)
class Segment:
    text: str
    trained: bool


def _merge(segments: list[Segment]) -> list[Segment]:
    """Join neighbours with the same flag and drop empty pieces."""
    out: list[Segment] = []
    for seg in segments:
        if not seg.text:
            continue
        if out and out[-1].trained == seg.trained:
            out[-1] = Segment(out[-1].text + seg.text, seg.trained)
        else:
            out.append(seg)
    return out


def as_example(item: Any) -> Example:
    """Accept what generation code has at hand: an Example, a record dict of any supported
    format, a list of chat messages, or a plain string (one user turn)."""
    if isinstance(item, Example):
        return item
    if isinstance(item, str):
        return Example("<prompt>", "chat", messages=[{"role": "user", "content": item}],
                       fields={"instruction": item, "input": "", "prompt": item})
    if isinstance(item, list):
        return Example("<prompt>", "chat", messages=[dict(m) for m in item])
    if isinstance(item, dict):
        fmt = guess_format(item)
        if fmt is None:
            raise TemplateError(f"cannot tell the format of {sorted(item)}")
        lenient = _with_stand_in_answer(item, fmt)
        example, problems = to_example(Record("<prompt>", lenient, "<prompt>"), fmt)
        if example is None:
            raise TemplateError("; ".join(problems))
        return example
    raise TemplateError(f"cannot render a {type(item).__name__} as a prompt")


def _with_stand_in_answer(record: dict[str, Any], fmt: str) -> dict[str, Any]:
    """A prompt-only record has no answer yet; give it a stand-in so it validates. The stand-in
    is never rendered: prompts stop where the (last) answer starts."""
    lenient = dict(record)
    if fmt in ("alpaca", "prompt_completion"):
        lenient.setdefault("output" if fmt == "alpaca" else "completion", "?")
    elif fmt == "chat":
        key = "messages" if "messages" in record else "conversations"
        turns = record.get(key)
        if isinstance(turns, list) and turns and isinstance(turns[-1], dict):
            last = turns[-1].get("role", turns[-1].get("from"))
            if last not in ("assistant", "gpt"):
                stand_in = {"role": "assistant", "content": "?"} if key == "messages" else {"from": "gpt", "value": "?"}
                lenient[key] = [*turns, stand_in]
    return lenient


def _trainable(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """Turns after the last assistant answer train nothing: leave them out."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    return messages[: last + 1]


class Rendered(str):
    """A prompt already in a template's layout (e.g. a few-shot prompt): tokenized as it is."""


class Template:
    """Base class. `add_special_tokens`: whether tokenization adds the tokenizer's own prefix
    (e.g. Llama's bos); False for chat templates that write it themselves."""

    name = "base"
    add_special_tokens = True
    stop_strings: tuple[str, ...] = ()

    def __init__(self, system_prompt: str | None = None):
        self.system_prompt = system_prompt

    def segments(self, example: Example) -> list[Segment]:
        raise NotImplementedError

    def render(self, example: Example) -> str:
        return "".join(s.text for s in self.segments(example))

    def render_prompt(self, item: Any) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": _VERSION, "system_prompt": self.system_prompt,
                "stop_strings": list(self.stop_strings)}

    def _with_system(self, messages: list[dict[str, str]]) -> list[dict[str, str]]:
        if self.system_prompt and (not messages or messages[0]["role"] != "system"):
            return [{"role": "system", "content": self.system_prompt}, *messages]
        return list(messages)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


class AlpacaTemplate(Template):
    name = "alpaca"
    stop_strings = ("\n### Instruction:",)

    def _parts(self, example: Example, *, prompt_only: bool) -> tuple[str, str, str, str]:
        """(system, instruction, input, output) for alpaca records or single-turn conversations."""
        if example.format == "alpaca":
            f = example.fields
            system = f.get("system") or self.system_prompt or ""
            return system, f["instruction"], f.get("input", ""), f.get("output", "")
        messages = example.prompt_messages() if prompt_only else _trainable(example.messages or [])
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        turns = messages[1:] if system else messages
        roles = [m["role"] for m in turns]
        if roles != (["user"] if prompt_only else ["user", "assistant"]):
            raise TemplateError(f"the alpaca template needs one user turn and one assistant answer, this "
                                f"conversation has {len(turns)} turns; use template chatml or model")
        output = turns[1]["content"] if len(turns) > 1 else ""
        return system or self.system_prompt or "", turns[0]["content"], "", output

    @staticmethod
    def _prompt(system: str, instruction: str, input_text: str) -> str:
        head = f"{system}\n\n" if system.strip() else ""
        if input_text.strip():
            return f"{head}### Instruction:\n{instruction}\n\n### Input:\n{input_text}\n\n### Response:\n"
        return f"{head}### Instruction:\n{instruction}\n\n### Response:\n"

    def segments(self, example: Example) -> list[Segment]:
        if example.format == "text":
            raise TemplateError("text records have no instruction/response; use format text (raw)")
        system, instruction, input_text, output = self._parts(example, prompt_only=False)
        return [Segment(self._prompt(system, instruction, input_text), False), Segment(output, True)]

    def render_prompt(self, item: Any) -> str:
        system, instruction, input_text, _ = self._parts(as_example(item), prompt_only=True)
        return self._prompt(system, instruction, input_text)


class ChatMLTemplate(Template):
    name = "chatml"
    stop_strings = ("<|im_end|>",)

    def segments(self, example: Example) -> list[Segment]:
        if example.messages is None:
            raise TemplateError("text records have no turns; use format text (raw)")
        out = []
        for i, m in enumerate(self._with_system(_trainable(example.messages))):
            header = f"{chr(10) if i else ''}<|im_start|>{m['role']}\n"
            if m["role"] == "assistant":  # the answer and its end-of-turn marker are trained
                out += [Segment(header, False), Segment(m["content"] + "<|im_end|>", True)]
            else:
                out.append(Segment(header + m["content"] + "<|im_end|>", False))
        return _merge(out)

    def render_prompt(self, item: Any) -> str:
        messages = self._with_system(as_example(item).prompt_messages())
        turns = "\n".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>" for m in messages)
        return f"{turns}\n<|im_start|>assistant\n" if turns else "<|im_start|>assistant\n"


class RawTemplate(Template):
    """prompt_completion: prompt (not trained) + completion; text: all trained. No markup."""

    name = "raw"

    def segments(self, example: Example) -> list[Segment]:
        if example.format == "text":
            return [Segment(example.text or "", True)]
        if example.format == "prompt_completion":
            return _merge([Segment(example.fields["prompt"], False), Segment(example.fields["completion"], True)])
        raise TemplateError(f"{example.format} records need a template (alpaca, chatml or model), not raw")

    def render_prompt(self, item: Any) -> str:
        if isinstance(item, str):
            return item
        example = as_example(item)
        if example.format == "prompt_completion":
            return example.fields["prompt"]
        if example.format == "text":
            return ""
        raise TemplateError(f"{example.format} records need a template (alpaca, chatml or model), not raw")


class ModelTemplate(Template):
    """The tokenizer's own chat template. The Jinja text is saved with the run, so a later
    tokenizer change cannot change how prompts are rendered."""

    name = "model"
    add_special_tokens = False  # chat templates write bos themselves

    def __init__(self, tokenizer: Any, chat_template: str | None = None, system_prompt: str | None = None):
        super().__init__(system_prompt)
        self.tokenizer = tokenizer
        self.chat_template = chat_template or tokenizer.get_chat_template()
        self.has_generation_markers = bool(GENERATION_MARKER.search(self.chat_template))

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "chat_template": self.chat_template}

    def messages_for(self, example: Example) -> list[dict[str, str]]:
        if example.messages is None:
            raise TemplateError("text records have no turns; use format text (raw)")
        return self._with_system(_trainable(example.messages))

    def apply(self, messages: list[dict[str, str]], **kwargs: Any) -> Any:
        """apply_chat_template with the saved template; template errors become TemplateError."""
        try:
            return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, **kwargs)
        except Exception as exc:  # jinja2 raise_exception(), e.g. "roles must alternate"
            raise TemplateError(f"the model's chat template rejected this conversation: {exc}") from None

    def segments(self, example: Example) -> list[Segment]:
        """Find each answer by rendering the conversation before it (with the generation prompt)
        and through it: the answer is the text between. Needs a prefix-stable template."""
        messages = self.messages_for(example)
        full = self.apply(messages, tokenize=False)
        out, pos = [], 0
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            if i == 0:
                raise TemplateError("the conversation starts with an assistant turn; the model's chat "
                                    "template needs a user (or system) turn before it")
            prompt = self.apply(messages[:i], tokenize=False, add_generation_prompt=True)
            through = self.apply(messages[: i + 1], tokenize=False)
            start = len(prompt)
            if start < pos or not full.startswith(prompt) or not full.startswith(through) \
                    or len(through.rstrip()) <= start:
                raise TemplateError(
                    "the model's chat template renders earlier turns differently once later turns follow, "
                    "so the answer cannot be located; use a template with {% generation %} markers or chatml")
            end = len(through.rstrip())  # whitespace after the end-of-turn marker is not an answer
            out += [Segment(full[pos:start], False), Segment(full[start:end], True)]
            pos = end
        out.append(Segment(full[pos:], False))
        return _merge(out)

    def render_prompt(self, item: Any) -> str:
        messages = self._with_system(as_example(item).prompt_messages())
        return self.apply(messages, tokenize=False, add_generation_prompt=True)


def tokenizer_chat_template(tokenizer: Any) -> str | None:
    """The tokenizer's default chat template text, or None."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return None
    try:
        return tokenizer.get_chat_template()
    except (ValueError, TypeError):
        return None


def resolve_template_name(name: str, data_format: str | None, tokenizer: Any = None) -> str:
    """`auto` -> raw for text and prompt_completion data (TRL's convention: the text is already
    formatted), else model when the tokenizer has a chat template, else alpaca/chatml by data."""
    if data_format == "text":
        return "raw"
    if name != "auto":
        return name
    if data_format == "prompt_completion":
        return "raw"
    if tokenizer_chat_template(tokenizer):
        return "model"
    return "alpaca" if data_format == "alpaca" else "chatml"


def get_template(name: str, data_format: str | None, tokenizer: Any = None,
                 system_prompt: str | None = None) -> Template:
    """Build the template a run uses. Raises ConfigError for `model` without a chat template."""
    resolved = resolve_template_name(name, data_format, tokenizer)
    if resolved == "model":
        if tokenizer_chat_template(tokenizer) is None:
            raise ConfigError("data.template: got 'model', but the tokenizer has no chat template",
                              ["allowed here: auto, alpaca, chatml (or use a model that ships a chat template)"])
        return ModelTemplate(tokenizer, system_prompt=system_prompt)
    cls = {"alpaca": AlpacaTemplate, "chatml": ChatMLTemplate, "raw": RawTemplate}.get(resolved)
    if cls is None:
        raise ConfigError(f"data.template: got {name!r}, allowed: {', '.join(TEMPLATE_NAMES)}")
    return cls(system_prompt=system_prompt)


def template_from_dict(data: dict[str, Any], tokenizer: Any = None) -> Template:
    """Rebuild a saved template. `model` templates need a tokenizer to render with."""
    name = data.get("name")
    if name == "model":
        if tokenizer is None:
            raise ValueError("a 'model' template needs the tokenizer to render")
        return ModelTemplate(tokenizer, chat_template=data["chat_template"], system_prompt=data.get("system_prompt"))
    cls = {"alpaca": AlpacaTemplate, "chatml": ChatMLTemplate, "raw": RawTemplate}.get(name)
    if cls is None:
        raise ValueError(f"unknown template {name!r} in saved template data")
    return cls(system_prompt=data.get("system_prompt"))

