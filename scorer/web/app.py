"""The FastAPI application: the engine's lifetime, templates, the error page and the login form."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from scorer.errors import UploadError
from scorer.scoring.engine import Engine
from scorer.settings import Settings
from scorer.watch.systemd import Notifier
from scorer.web.auth import check_login, guard, set_session
from scorer.web.runs import Runs, ScoringPool

HERE = Path(__file__).resolve().parent


@dataclass
class Web:
    """What every page needs: the settings, the engine and its pool, the recent runs and the templates."""

    settings: Settings
    engine: Engine
    token: str | None
    pool: ScoringPool
    runs: Runs
    templates: Jinja2Templates

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        """Render a template with what every page shows (the model's classes, whether a login is needed)."""
        context.setdefault("classes", self.engine.model.classes)
        return self.templates.TemplateResponse(request, template, {"login": self.token is not None, **context},
                                               status_code=status)


def create_app(settings: Settings, engine: Engine, token: str | None) -> FastAPI:
    """The application around an already-loaded engine; stopping it stops the pool and deletes the runs."""
    from scorer.web.pages import add_pages

    web = Web(settings, engine, token, ScoringPool(settings.serve.queue), Runs(),
              Jinja2Templates(directory=HERE / "templates"))

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
    app.middleware("http")(guard(token, lambda request: _login_form(web, request, "", 401)))

    async def upload_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, UploadError)
        return web.page(request, "try.html", exc.status, error=str(exc), serve=settings.serve)

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
        form = await request.form(max_files=0, max_fields=2)
        given = form.get("token")
        if web.token is None:
            return RedirectResponse("/try", 303)
        if not isinstance(given, str) or not await check_login(given, web.token):
            return _login_form(web, request, "That token is not right: ask whoever runs this server.", 401)
        response = RedirectResponse("/try", 303)
        set_session(response, web.token, secure=request.url.scheme == "https")
        return response
