"""The FastAPI app behind `lmtune ui`: pages, the JSON the live curves poll, the run's
report.html, and the static assets (chat and /new's actions: actions.py). Rules, in this order for every request: the Host header is a
loopback name unless the server was opened to other hosts (a web page elsewhere cannot reach it by
DNS rebinding); the token, when one is set; a run name is one path component naming a run
directly inside RUNS_DIR, or a sweep's trial SWEEP/TRIAL (anything else is 404)."""

from __future__ import annotations

import secrets
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from lmtune.report.build import REPORT_FILE
from lmtune.ui import forms, pages
from lmtune.ui.actions import Settings, add_actions
from lmtune.ui.runs import NotARun, metrics_after, resolve_run, summaries, summarize, sweep_summaries

TOKEN_COOKIE = "lmtune_ui_token"
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]
# Scripts and styles come only from this server; report.html's plots are data: images.
HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                      "frame-ancestors 'none'",
           "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}


def create_app(runs_dir: str | Path, token: str | None = None, allowed_hosts: list[str] | None = None,
               read_only: bool = False, data_dirs: list[Path] | None = None,
               max_upload: int | None = None) -> FastAPI:
    """The UI over `runs_dir`. `token`: required on every request (header, cookie or ?token=).
    `allowed_hosts`: Host header values accepted (default: loopback names only). `read_only`: no
    uploads, no starting or stopping runs. `data_dirs`: folders /new may read data files from (and
    RUNS_DIR/uploads); `max_upload`: bytes one upload may have."""
    runs_dir = Path(runs_dir)
    app = FastAPI(title="lmtune ui", docs_url=None, redoc_url=None, openapi_url=None)
    settings = Settings(runs_dir, read_only, list(data_dirs or []))
    if max_upload is not None:
        settings.max_upload = max_upload

    def run_path(name: str) -> Path:
        try:
            return resolve_run(runs_dir, name)
        except NotARun:
            raise HTTPException(404, f"no run named {name!r} under {runs_dir}") from None

    app.state.models, app.state.launcher = add_actions(app, settings, run_path)   # inner to the guard below

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token is not None and not _has_token(request, token):
            return PlainTextResponse("this lmtune ui needs its token: open the address `lmtune ui` printed "
                                     "(it ends in ?token=...), or send 'Authorization: Bearer TOKEN'", 401)
        response = await call_next(request)
        response.headers.update(HEADERS)
        if token is not None and request.query_params.get("token"):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict")
        return response

    app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts or LOOPBACK_HOSTS)

    @app.get("/", response_class=HTMLResponse)
    def index():
        return pages.runs_page(runs_dir, summaries(runs_dir), sweep_summaries(runs_dir))

    @app.get("/chat", response_class=HTMLResponse)
    def chat_page():
        return forms.chat_page(runs_dir)

    @app.get("/new", response_class=HTMLResponse)
    def new_page():
        return forms.new_page(runs_dir, settings)

    @app.get("/runs/{name:path}/report.html")
    def report(name: str):
        path = run_path(name) / REPORT_FILE
        if not path.is_file():
            raise HTTPException(404, f"{name} has no {REPORT_FILE} (lmtune report {name})")
        return FileResponse(path, media_type="text/html")

    @app.get("/runs/{name:path}", response_class=HTMLResponse)
    def run_page(name: str):
        return pages.run_page(runs_dir, run_path(name), name, settings.read_only)

    @app.get("/compare", response_class=HTMLResponse)
    def compare_page(runs: str = Query("", description="run names, comma-separated")):
        names = [n for n in runs.split(",") if n]
        if not names:
            raise HTTPException(400, "name the runs to compare: /compare?runs=A,B")
        return pages.compare_page(runs_dir, [run_path(n) for n in names])

    @app.get("/api/runs")
    def api_runs():
        return [s.to_dict() for s in summaries(runs_dir)]

    @app.get("/api/runs/{name:path}/metrics")
    def api_metrics(name: str, after: int = Query(0, ge=0)):
        root = run_path(name)
        out = metrics_after(root, after)
        summary = summarize(root, name)
        out.update(status=summary.status.state, steps=summary.steps, resume=summary.status.resume,
                   detail=summary.status.detail)
        return JSONResponse(out, headers={"Cache-Control": "no-store"})

    @app.get("/api/runs/{name:path}")
    def api_run(name: str):
        return summarize(run_path(name), name).to_dict()

    static = resources.files("lmtune.ui") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")
    return app


def _has_token(request: Request, token: str) -> bool:
    header = request.headers.get("authorization", "")
    given = [header[7:].strip() if header.lower().startswith("bearer ") else "",
             request.cookies.get(TOKEN_COOKIE, ""), request.query_params.get("token", "")]
    return any(g and secrets.compare_digest(g.encode(), token.encode()) for g in given)
