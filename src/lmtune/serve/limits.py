"""A request body limit, enforced before the body is parsed (pure ASGI middleware): a declared
Content-Length above the limit is refused at once without reading the body, and a body sent
without one (chunked) is counted as it arrives and refused once it passes the limit. Either way
the client gets a 413 with an OpenAI error body, and no oversized body is ever held in memory."""

from __future__ import annotations

from starlette.exceptions import HTTPException

from lmtune.serve import DEFAULT_MAX_REQUEST_BYTES
from lmtune.serve.protocol import APIError


def _too_large(limit: int, size: str) -> APIError:
    return APIError(413, f"the request body is {size}; this server takes at most {limit:,} bytes "
                         "(lmtune serve --max-request-bytes)", code="request_too_large")


class BodyTooLarge(HTTPException):
    """Raised from `receive`: FastAPI passes HTTPExceptions raised while reading a body through
    to the app's handler (other exceptions there become a 400 'error parsing the body')."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body is larger than {limit:,} bytes "
                              "(lmtune serve --max-request-bytes)")


class BodyLimit:
    """ASGI middleware: `app.add_middleware(BodyLimit, max_bytes=...)`."""

    def __init__(self, app, max_bytes: int = DEFAULT_MAX_REQUEST_BYTES):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                return await self._answer(scope, send, APIError(400, "the Content-Length header is not a number"))
            if int(declared) > self.max_bytes:
                return await self._answer(scope, send, _too_large(self.max_bytes, f"{int(declared):,} bytes"))
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        started = False

        async def tracked(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except BodyTooLarge:
            if started:
                raise
            await self._answer(scope, send, _too_large(self.max_bytes, f"more than {self.max_bytes:,} bytes"))

    @staticmethod
    async def _answer(scope, send, error: APIError) -> None:
        response = error.response()
        response.headers["connection"] = "close"  # the unread body must not be taken as a next request
        await response(scope, None, send)
