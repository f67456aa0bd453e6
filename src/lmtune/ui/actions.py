"""The UI's endpoints that do something: chat (streamed), and /new's upload, check + advise, config
check, start, stop and resume. Every POST must carry the X-Lmtune-UI header, which a web page on
another site cannot send without the browser asking this server first (a CORS preflight it never
grants): a link or form elsewhere cannot start a run. `read_only` refuses /new's actions (403)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from lmtune.errors import UserError
from lmtune.ui import newrun
from lmtune.ui.chat import Models, checked_messages, job_for
from lmtune.ui.newrun import Refused
from lmtune.ui.process import Launcher, log_path, tail

ACTION_HEADER = "x-lmtune-ui"
MAX_JSON_BYTES = 256 * 1024


@dataclass
class Settings:
    runs_dir: Path
    read_only: bool = False
    data_dirs: list[Path] = field(default_factory=list)
    max_upload: int = newrun.DEFAULT_MAX_UPLOAD
    model: str = "tiny"          # the tokenizer `data check` and `advise` size the data with


async def read_json(request: Request) -> dict:
    size, chunks = 0, []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise Refused(413, f"the request is larger than {MAX_JSON_BYTES:,} bytes")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        raise Refused(400, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise Refused(400, "the request body must be a JSON object")
    return body


def add_actions(app: FastAPI, s: Settings, run_path) -> tuple[Models, Launcher]:
    models, launcher = Models(), Launcher(s.runs_dir)
    allowed = newrun.allowed_dirs(s.runs_dir, s.data_dirs)

    @app.exception_handler(Refused)
    async def refused(request: Request, exc: Refused):
        return JSONResponse({"error": str(exc)}, exc.status)

    @app.middleware("http")
    async def post_rules(request: Request, call_next):
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            if request.headers.get(ACTION_HEADER) != "1":
                return JSONResponse({"error": f"actions need the {ACTION_HEADER} header (send them from the UI)"}, 403)
            writes = request.url.path.startswith(("/api/new/", "/api/upload")) or \
                request.url.path.endswith(("/stop", "/resume"))
            if s.read_only and writes:
                return JSONResponse({"error": "this lmtune ui is read-only (--read-only): it starts and stops "
                                              "no runs and takes no uploads"}, 403)
        return await call_next(request)

    @app.post("/api/chat")
    async def chat(request: Request):
        body = await read_json(request)
        name, base = str(body.get("run", "")), bool(body.get("base"))
        messages = checked_messages(body.get("messages"))
        max_tokens = body.get("max_tokens", 128)
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise Refused(400, f"max_tokens: a whole number of at least 1, got {max_tokens!r}")
        root = run_path(name)
        loop = asyncio.get_running_loop()
        try:
            engine = await loop.run_in_executor(None, models.get, name, root, base)
        except UserError as exc:       # damaged weights, a base that is not there: the loader's message
            raise Refused(409, exc.render()) from None
        job = await loop.run_in_executor(None, job_for, engine, messages, max_tokens)
        events: asyncio.Queue = asyncio.Queue()
        job.callback = lambda text, finish, error: loop.call_soon_threadsafe(events.put_nowait, (text, finish, error))
        engine.submit(job)

        async def lines():
            try:
                while True:
                    text, finish, error = await events.get()
                    if text:
                        yield json.dumps({"text": text}) + "\n"
                    if error or finish:
                        yield json.dumps({"error": error} if error else {"done": finish}) + "\n"
                        return
            finally:
                if job.finish_reason is None:
                    job.cancelled = True    # the page went away: the row leaves at the next step
        return StreamingResponse(lines(), media_type="application/x-ndjson", headers={"Cache-Control": "no-store"})

    @app.get("/api/data")
    def data_files():
        return {"files": newrun.list_data(allowed), "folders": [str(d) for d in allowed],
                "max_upload": s.max_upload, "read_only": s.read_only}

    @app.post("/api/upload")
    async def upload(request: Request, name: str = ""):
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > s.max_upload:
            raise Refused(413, f"the upload is {int(declared):,} bytes; this UI takes at most {s.max_upload:,} "
                               "(lmtune ui --max-upload-mb)")
        path = await newrun.save_upload(request.stream(), s.runs_dir, name, s.max_upload)
        return {"path": str(path)}

    @app.post("/api/new/inspect")
    async def inspect(request: Request):
        body = await read_json(request)
        name = newrun.run_name(str(body.get("name", "")), s.runs_dir)
        path = newrun.data_file(str(body.get("path", "")), allowed)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, newrun.check_and_advise, path, s.runs_dir, name, s.model)

    def config_of(body: dict) -> tuple[str, Path]:
        name = newrun.run_name(str(body.get("name", "")), s.runs_dir)
        return name, newrun.checked_config(str(body.get("config", "")), s.runs_dir, name, allowed)

    @app.post("/api/new/validate")
    async def validate(request: Request):
        name, path = config_of(await read_json(request))
        return {"ok": True, "config": str(path)}

    @app.post("/api/new/start")
    async def start(request: Request):
        body = await read_json(request)
        name = newrun.run_name(str(body.get("name", "")), s.runs_dir)
        if (s.runs_dir / name).exists() or launcher.busy(name):
            raise Refused(409, f"{s.runs_dir / name} exists already: pick another run name (or resume that run)")
        config_of(body)
        proc = launcher.start(name, s.runs_dir / name, newrun.train_argv(s.runs_dir, name))
        return {"name": name, "pid": proc.pid}

    @app.post("/api/runs/{name}/stop")
    def stop(name: str):
        pid = launcher.stop(name, run_path(name))
        if pid is None:
            raise Refused(409, f"{name} is not running")
        return {"name": name, "pid": pid}

    @app.post("/api/runs/{name}/resume")
    def resume(name: str):
        root = run_path(name)
        from lmtune.ui.runs import summarize

        if summarize(root, name).status.state == "running" or launcher.busy(name):
            raise Refused(409, f"{name} is running already")
        proc = launcher.start(name, root, newrun.resume_argv(root))
        return {"name": name, "pid": proc.pid}

    @app.get("/api/runs/{name}/log")
    def log(name: str):
        newrun.run_name(name, s.runs_dir)
        proc = launcher.procs.get(name)
        state = None if proc is None else ("running" if proc.poll() is None else f"exited {proc.returncode}")
        return JSONResponse({"process": state, "log": tail(log_path(s.runs_dir, name))},
                            headers={"Cache-Control": "no-store"})

    return models, launcher
