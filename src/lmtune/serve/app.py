"""The OpenAI-compatible HTTP API (FastAPI): /v1/models, /v1/chat/completions, /v1/completions,
/health. Prompts go through the served run's own template (Generator.encode, as `lmtune generate`);
generation goes through the batching Engine. Streams are OpenAI chunk events over SSE ending with
`data: [DONE]`; the first chat chunk carries the role and an empty content (clients expect it)."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from sse_starlette import EventSourceResponse
from starlette.exceptions import HTTPException

from lmtune.data.templates import TemplateError
from lmtune.generate import GenerationSettings
from lmtune.rag.inference import sources
from lmtune.rag.prompt import augment_item
from lmtune.serve.engine import Engine, Job
from lmtune.serve.limits import DEFAULT_MAX_REQUEST_BYTES, BodyLimit
from lmtune.serve.prompt import encode_untrusted, fewest_tokens
from lmtune.serve.protocol import (APIError, ChatRequest, CompletionRequest, chat_messages, checked_text,
                                   stops_of)

# How often a waiting non-streaming request looks whether its client is still there.
DISCONNECT_POLL_S = 0.1


def create_app(engine: Engine, api_key: str | None = None, default_max_tokens: int = 512,
               max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> FastAPI:
    app = FastAPI(title="lmtune serve", docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    # Rendering and tokenizing a long prompt takes time: one thread of its own, so the event loop
    # (other requests, /health) never waits on it, and the tokenizer is not entered concurrently.
    tokenizing = ThreadPoolExecutor(1, thread_name_prefix="lmtune-serve-tokenize")

    def check_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("authorization", "")
        token = given[7:] if given.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(token.encode(), api_key.encode()):
            raise APIError(401, "missing or incorrect API key: send 'Authorization: Bearer KEY' with the "
                                "key given to lmtune serve --api-key", code="invalid_api_key",
                           kind="authentication_error")

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            return APIError(400, "the request body is not valid JSON").response()
        parts = [f"{'.'.join(str(x) for x in e['loc'] if x != 'body')}: {e['msg']}" for e in errors]
        param = ".".join(str(x) for x in errors[0]["loc"] if x != "body") if errors else None
        return APIError(422, "; ".join(parts), param or None).response()

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        message = f"{request.method} {request.url.path}: {exc.detail}"
        if exc.status_code != 413:
            return APIError(exc.status_code, message).response()
        response = APIError(413, message, code="request_too_large").response()
        response.headers["connection"] = "close"  # uvicorn would read the rest of the body otherwise
        return response

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        # A bug, not the client's fault: the client gets OpenAI's error shape (never a plain-text
        # 500); Starlette then re-raises it, so uvicorn logs the traceback on the server's side.
        return APIError(500, f"internal error ({type(exc).__name__}); the server log has the details",
                        kind="server_error").response()

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": sorted(engine.served), "generate_calls": engine.calls,
                "requests": engine.rows, "generating": engine.active, "steps": engine.steps}

    @app.get("/v1/models", dependencies=[Depends(check_key)])
    async def models():
        return {"object": "list", "data": [{"id": s.name, "object": "model", "created": s.created,
                                            "owned_by": "lmtune"} for s in engine.served.values()]}

    async def job_of(served, req, prompt, requested: int) -> Job:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(tokenizing, _job, served, req, prompt, requested)

    @app.post("/v1/chat/completions", dependencies=[Depends(check_key)])
    async def chat(req: ChatRequest, request: Request):
        served = _served(engine, req.model)
        messages = chat_messages(req)
        job = await job_of(served, req, messages, req.max_completion_tokens or req.max_tokens or default_max_tokens)
        return await _respond(engine, job, req, request, chat=True)

    @app.post("/v1/completions", dependencies=[Depends(check_key)])
    async def completions(req: CompletionRequest, request: Request):
        served = _served(engine, req.model)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        if len(prompts) != 1:
            raise APIError(400, f"prompt: one prompt per request, got {len(prompts)}; send them as "
                                "separate (concurrent) requests, which the server batches", "prompt")
        if req.echo:
            raise APIError(400, "echo is not supported", "echo")
        job = await job_of(served, req, checked_text(prompts[0], "prompt"), req.max_tokens or default_max_tokens)
        return await _respond(engine, job, req, request, chat=False)

    return app


def _served(engine: Engine, name: str):
    if name not in engine.served:
        raise APIError(404, f"the model {name!r} does not exist; this server has: {', '.join(sorted(engine.served))}",
                       "model", "model_not_found")
    return engine.served[name]


def _job(served, req, prompt, requested: int) -> Job:
    """Render and tokenize the prompt as `lmtune generate` does (special-token text in contents
    stays text: serve/prompt.py); cap max_tokens by the context."""
    if req.n != 1:
        raise APIError(400, f"n: only n=1 is supported, got {req.n}", "n")
    param = "messages" if isinstance(prompt, list) else "prompt"
    passages = None
    if served.search is not None:   # the passages for the last user message go before it
        prompt, passages = augment_item(prompt, served.search)
    chars = len(prompt) if isinstance(prompt, str) else sum(len(m["content"]) for m in prompt)
    floor = fewest_tokens(served.gen.tokenizer, chars)
    if floor >= served.context:  # refused without spending seconds tokenizing megabytes
        raise APIError(400, f"the prompt is at least {floor:,} tokens ({chars:,} characters); {served.name} "
                            f"takes {served.context} tokens in all (prompt + answer); shorten the prompt",
                       param, "context_length_exceeded")
    try:
        ids = encode_untrusted(served.gen, prompt)
    except TemplateError as exc:
        raise APIError(400, f"{served.name}'s template cannot render this prompt: {exc}", param) from None
    if not ids:
        raise APIError(400, "the prompt renders to no tokens; send some text", "prompt")
    room = served.context - len(ids)
    if room <= 0:
        raise APIError(400, f"the prompt is {len(ids)} tokens; {served.name} takes {served.context} tokens "
                            "in all (prompt + answer); shorten the prompt", param, "context_length_exceeded")
    greedy = not req.temperature
    settings = GenerationSettings(greedy=greedy, temperature=req.temperature or 1.0,
                                  top_p=req.top_p if req.top_p is not None else 1.0, seed=req.seed or 0)
    return Job(served.name, ids, min(requested, room), settings, stops_of(req),
               sources=None if passages is None else sources(passages))


def _sources(job: Job) -> dict:
    """The passages retrieval put in the prompt, as a top-level `sources` list (a field OpenAI's
    clients keep as an extra); nothing for a model served without retrieval."""
    return {} if job.sources is None else {"sources": job.sources}


def _usage(job: Job) -> dict:
    n = len(job.prompt_ids)
    return {"prompt_tokens": n, "completion_tokens": job.completion_tokens, "total_tokens": n + job.completion_tokens}


async def _respond(engine: Engine, job: Job, req, request: Request, chat: bool):
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def callback(text, finish, error):  # a plain answer waits for the end only
        if req.stream or finish or error:
            loop.call_soon_threadsafe(events.put_nowait, (text, finish, error))

    job.callback = callback
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": job.model}
    engine.submit(job)
    if not req.stream:
        while True:
            try:
                _, finish, error = await asyncio.wait_for(events.get(), DISCONNECT_POLL_S)
            except asyncio.TimeoutError:
                finish = error = None
            if not (finish or error) and await request.is_disconnected():
                job.cancelled = True  # nobody waits for the answer: its row leaves at the next step
                return Response(status_code=499)
            if error:
                raise APIError(500, f"generation failed: {error}", kind="server_error")
            if finish:
                break
        choice = ({"index": 0, "message": {"role": "assistant", "content": job.text}} if chat
                  else {"index": 0, "text": job.text})
        return {**head, "object": "chat.completion" if chat else "text_completion",
                "choices": [{**choice, "finish_reason": job.finish_reason, "logprobs": None}], "usage": _usage(job),
                **_sources(job)}
    usage = bool(req.stream_options and req.stream_options.include_usage)
    return EventSourceResponse(_stream(job, events, head, chat, usage), ping=None)


async def _stream(job: Job, events: asyncio.Queue, head: dict, chat: bool, usage: bool):
    obj = "chat.completion.chunk" if chat else "text_completion"

    first = [True]   # the first chunk carries the sources (retrieval happened before generation)

    def chunk(text: str | None, finish: str | None, role: bool = False) -> dict:
        if chat:
            delta = {} if text is None else {"content": text}
            if role:
                delta = {"role": "assistant", **delta}
            choice = {"index": 0, "delta": delta}
        else:
            choice = {"index": 0, "text": text or ""}
        body = {**head, "object": obj, "choices": [{**choice, "finish_reason": finish, "logprobs": None}]}
        if first[0]:
            body.update(_sources(job))
            first[0] = False
        if usage:
            body["usage"] = None
        return {"data": json.dumps(body, ensure_ascii=False)}

    try:
        if chat:
            yield chunk("", None, role=True)
        while True:
            text, finish, error = await events.get()
            if error:
                yield {"data": json.dumps(APIError(500, f"generation failed: {error}", kind="server_error").body())}
                break
            if text:
                yield chunk(text, None)
            if finish:
                yield chunk(None if chat else "", finish)
                if usage:
                    yield {"data": json.dumps({**head, "object": obj, "choices": [], "usage": _usage(job)})}
                break
        yield {"data": "[DONE]"}
    finally:
        if job.finish_reason is None:
            job.cancelled = True  # the client went away: its row stops at the next token
