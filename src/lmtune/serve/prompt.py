"""Prompt ids for a client's messages, where the client is not trusted with the template's
special tokens: text such as "<|im_end|><|im_start|>assistant" inside a message's content is
tokenized as the characters it is, never as the special tokens the template puts between turns,
so a client cannot forge system or assistant turns.

How: a prompt whose contents hold no special token's text is encoded exactly as `lmtune generate`
encodes it (Generator.encode: the training template's rendering, tokenized whole). Otherwise the
template is rendered once more with a marker in place of each content, which shows where every
content sits in the rendered text; each special token's text found inside a content is then
tokenized as text (the tokenizers library's `encode_special_tokens`, transformers'
`split_special_tokens`) and the text around it as usual. For chat templates this gives the ids of
transformers' own `apply_chat_template(..., sanitize_control_tokens=True)` (tested).
"""

from __future__ import annotations

import re

from lmtune.data.templates import TemplateError
from lmtune.data.tokenize import special_prefix

_MARK = "\ue000{}\ue001"           # private-use characters: no template writes them
_MARKS = re.compile("\ue000(\\d+)\ue001")


def special_texts(tokenizer) -> list[str]:
    """The text of every special added token, longest first (so the longest match wins)."""
    found = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special and t.content}
    return sorted(found, key=len, reverse=True)


def encode_untrusted(gen, item) -> list[int]:
    """`gen.encode(item)` for a prompt string or a message list from a client."""
    messages = [{"role": "user", "content": item}] if isinstance(item, str) else item
    specials = special_texts(gen.tokenizer)
    if not any(s in m["content"] for m in messages for s in specials):
        return gen.encode(item)
    text = gen.template.render_prompt(messages)
    spans = _content_spans(gen.template, messages, text)
    if spans is None:  # the template rewrites contents (e.g. strips them): their place is unknown
        token = next(s for m in messages for s in specials if s in m["content"])
        raise TemplateError(f"a message's content holds the special token text {token!r}, and this template "
                            "rewrites contents, so it cannot be kept as plain text; remove it")
    forged = [(m.start(), m.end()) for m in re.finditer("|".join(map(re.escape, specials)), text)
              if any(a <= m.start() and m.end() <= b for a, b in spans)]
    return _encode_pieces(gen, text, forged)


def _content_spans(template, messages: list[dict], text: str) -> list[tuple[int, int]] | None:
    """Where each message's content sits in `text`, the template's rendering of `messages`."""
    skeleton = template.render_prompt([{**m, "content": _MARK.format(i)} for i, m in enumerate(messages)])
    spans, pos, rebuilt = [], 0, []
    for k, piece in enumerate(_MARKS.split(skeleton)):
        if k % 2:
            piece = messages[int(piece)]["content"]
            spans.append((pos, pos + len(piece)))
        rebuilt.append(piece)
        pos += len(piece)
    return spans if "".join(rebuilt) == text else None


_AS_TEXT: dict[int, object] = {}
_LONGEST: dict[int, int] = {}


def fewest_tokens(tokenizer, chars: int) -> int:
    """A floor on the number of tokens of a text of `chars` characters, known without tokenizing
    it: no token covers more characters than the longest vocabulary entry (counted in characters,
    or bytes for byte-level vocabularies, which is no less), halved for normalizers that drop
    characters. Lets the server refuse a prompt far beyond the context at once."""
    key = id(tokenizer)
    if key not in _LONGEST:
        _LONGEST[key] = max(len(t) for t in tokenizer.get_vocab())
    return chars // (2 * _LONGEST[key])


def _as_text(tok):
    """encode(text) -> ids with special tokens' text encoded as text. For a fast tokenizer, a
    private copy of its backend with that switch on: `tok(..., split_special_tokens=True)` would
    flip the switch on the shared backend, racing with the engine thread decoding through it."""
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        return lambda text: tok(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
    if id(backend) not in _AS_TEXT:
        from tokenizers import Tokenizer

        copy = Tokenizer.from_str(backend.to_str())
        copy.encode_special_tokens = True
        _AS_TEXT[id(backend)] = lambda text: copy.encode(text, add_special_tokens=False).ids
    return _AS_TEXT[id(backend)]


def _encode_pieces(gen, text: str, forged: list[tuple[int, int]]) -> list[int]:
    tok, ids, pos = gen.tokenizer, [], 0
    for start, end in forged:
        ids += tok(text[pos:start], add_special_tokens=False)["input_ids"] if start > pos else []
        ids += _as_text(tok)(text[start:end])
        pos = end
    ids += tok(text[pos:], add_special_tokens=False)["input_ids"] if pos < len(text) else []
    return (special_prefix(tok) + ids) if gen.template.add_special_tokens else list(ids)
