"""OpenAI request bodies and error bodies (the subset lmtune serves; unknown fields are ignored)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients send many fields we do not use


class StreamOptions(_Body):
    include_usage: bool = False


class Message(_Body):
    role: str
    content: str | list[dict[str, Any]] | None = None


class _Common(_Body):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)   # 0 or omitted: greedy, as `lmtune generate`
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-2**63, le=2**63 - 1)  # a 64-bit integer, as torch's seeds


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(_Common):
    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)  # OpenAI's default for /v1/completions
    echo: bool = False


class APIError(Exception):
    """Answered with OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: Literal["invalid_request_error", "authentication_error", "server_error"]
                 = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self):
        """The JSON response; ASCII-escaped, so no text in a message (a client's lone surrogate
        echoed back) can make the error itself fail to encode."""
        from starlette.responses import Response

        return Response(json.dumps(self.body(), ensure_ascii=True), status_code=self.status,
                        media_type="application/json")


def checked_text(text: str, param: str) -> str:
    """JSON may carry lone UTF-16 surrogates ("\\ud800"), which are no text: no tokenizer can
    encode them. Refused here with a 400 instead of failing deep inside tokenization."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise APIError(400, f"{param}: not valid Unicode text (a lone surrogate {text[exc.start]!a} at "
                            f"character {exc.start}); send UTF-8 text", param) from None
    return text


def stops_of(req: _Common) -> tuple[str, ...]:
    if req.stop is None:
        return ()
    stops = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop)
    if len(stops) > 4:
        raise APIError(400, f"stop: at most 4 sequences, got {len(stops)}", "stop")
    return tuple(checked_text(s, "stop") for s in stops if s)


def message_text(msg: Message, index: int) -> str:
    """A message's text; content parts of type text are joined, other parts are refused."""
    if msg.content is None:
        return ""
    if isinstance(msg.content, str):
        return checked_text(msg.content, f"messages[{index}].content")
    texts = []
    for part in msg.content:
        if part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise APIError(400, f"messages[{index}].content: only text parts are supported, got "
                                f"type {part.get('type')!r}", f"messages[{index}].content")
        texts.append(part["text"])
    return checked_text("".join(texts), f"messages[{index}].content")


def chat_messages(req: ChatRequest) -> list[dict[str, str]]:
    roles = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
    out = []
    for i, msg in enumerate(req.messages):
        if msg.role not in roles:
            raise APIError(400, f"messages[{i}].role: {msg.role!r} is not supported; use system, user "
                                "or assistant", f"messages[{i}].role")
        out.append({"role": roles[msg.role], "content": message_text(msg, i)})
    if out[-1]["role"] == "assistant":
        raise APIError(400, "messages: the last message is the assistant's; end with a user message "
                            "to get an answer", "messages")
    return out
