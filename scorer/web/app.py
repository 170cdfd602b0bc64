"""The FastAPI application: the engine's lifetime, templates, the error page and the login form."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from scorer.errors import UploadError
from scorer.scoring.engine import Engine
from scorer.sdnotify import Notifier
from scorer.settings import Settings
from scorer.web.auth import Sessions, Throttle, end_session, guard, right_token, set_session
from scorer.web.gate import Gate
from scorer.web.pages import add_pages
from scorer.web.runs import Runs, ScoringPool
from scorer.web.state import Web

HERE = Path(__file__).resolve().parent


def create_app(settings: Settings, engine: Engine, token: str | None) -> FastAPI:
    """The application around an already-loaded engine; stopping it stops the pool and deletes the runs."""
    sessions = Sessions(token, settings.serve.session_hours) if token is not None else None
    web = Web(settings, engine, token, ScoringPool(settings.serve.queue), Runs(),
              Jinja2Templates(directory=HERE / "templates"), sessions, Throttle())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        notifier = Notifier()
        notifier.send("READY=1", "STATUS=serving")
        pinger = asyncio.create_task(_ping(notifier))
        try:
            yield
        finally:
            pinger.cancel()
            notifier.send("STOPPING=1")
            web.pool.close()
            web.runs.close()

    app = FastAPI(title="scorer", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.web = web
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.middleware("http")(guard(sessions, settings.serve.allowed_hosts,
                                 lambda request: _login_form(web, request, "", 401)))
    # Added last, so outermost: it sees every request before any body is read.
    app.add_middleware(Gate, serve=settings.serve, token=token, refusal=web.refusal)

    async def upload_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, UploadError)
        return web.page(request, "try.html", exc.status, error=str(exc), serve=settings.serve, video=settings.video)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return web.page(request, "error.html", exc.status_code, message=exc.detail)

    app.add_exception_handler(UploadError, upload_error)
    app.add_exception_handler(HTTPException, http_error)
    _add_login(app, web)
    add_pages(app, web)
    return app


async def _ping(notifier: Notifier) -> None:
    """WATCHDOG=1 from the event loop itself: if the loop hangs, systemd restarts the server."""
    while True:
        notifier.ping()
        await asyncio.sleep(notifier.interval)


def _login_form(web: Web, request: Request, error: str, status: int) -> Response:
    return web.page(request, "login.html", status, error=error, classes=())


def _add_login(app: FastAPI, web: Web) -> None:
    @app.get("/login")
    async def login_page(request: Request) -> Response:
        return _login_form(web, request, "", 200)

    @app.post("/login")
    async def login(request: Request) -> Response:
        if web.sessions is None:
            return RedirectResponse("/try", 303)
        address = request.client.host if request.client else ""
        wait = web.throttle.book(address, time.monotonic())
        if wait:
            response = _login_form(web, request, f"Too many wrong tokens from your address: try again in "
                                                 f"{wait:.0f} s.", 429)
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        form = await request.form(max_files=0, max_fields=2)
        given = form.get("token")
        if not isinstance(given, str) or not right_token(given, web.sessions.token):
            web.throttle.failed(address, time.monotonic())
            return _login_form(web, request, "That token is not right: ask whoever runs this server.", 401)
        web.throttle.succeeded(address)
        response = RedirectResponse("/try", 303)
        set_session(response, web.sessions.issue(time.time()), request.url.scheme == "https", web.sessions.lifetime)
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        if web.sessions is not None:
            for value in request.cookies.values():
                web.sessions.revoke(value, time.time())
        response = RedirectResponse("/login" if web.sessions is not None else "/try", 303)
        end_session(response)
        return response
