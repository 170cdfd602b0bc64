"""The pages: Try (upload and see the ranked gallery), Reports, Model, Health and /healthz."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import BinaryIO

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from scorer.web.state import Web
from scorer.web.uploads import read_uploads
from scorer.web.views import (
    gallery,
    inbox_waiting,
    last_batch,
    list_reports,
    model_view,
    open_report,
    read_ledger,
    report_path,
)

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def add_pages(app: FastAPI, web: Web) -> None:
    """Register every page on the application."""
    _add_try(app, web)
    _add_reports(app, web)
    _add_status(app, web)


def _add_try(app: FastAPI, web: Web) -> None:
    settings = web.settings

    @app.get("/")
    async def home() -> Response:
        return RedirectResponse("/try", 303)

    @app.get("/try")
    async def try_page(request: Request) -> Response:
        return web.page(request, "try.html", serve=settings.serve, video=settings.video)

    @app.post("/try")
    async def upload(request: Request) -> Response:
        uploads, discard = await read_uploads(request, settings.serve)
        try:
            run = await web.pool.run(lambda: web.runs.score(web.engine, settings, uploads))
        finally:
            await discard()
        return RedirectResponse(f"/try/{run.id}", 303)

    @app.get("/try/{run_id}")
    async def try_result(request: Request, run_id: str) -> Response:
        run = web.runs.get(run_id)
        if run is None:
            raise HTTPException(404, "this result is no longer kept: upload the creatives again")
        return web.page(request, "try.html", serve=settings.serve, video=settings.video, run=run,
                        gallery=gallery(run.result, web.engine.model.classes))

    @app.get("/try/{run_id}/report.xlsx")
    async def try_report(run_id: str) -> Response:
        run = web.runs.get(run_id)
        if run is None:
            raise HTTPException(404, "this result is no longer kept: upload the creatives again")
        return FileResponse(run.report, media_type=XLSX, filename=run.report.name)


def _add_reports(app: FastAPI, web: Web) -> None:
    settings = web.settings

    @app.get("/reports")
    async def reports(request: Request) -> Response:
        files = await run_in_threadpool(list_reports, settings.outbox) if settings.outbox.is_dir() else []
        latest = await run_in_threadpool(read_ledger, settings, None)
        return web.page(request, "reports.html", reports=files, latest_days=settings.watch.latest_days,
                        has_latest=report_path(settings.outbox, "latest.xlsx") is not None,
                        gallery=gallery(latest, web.engine.model.classes) if latest is not None else None)

    @app.get("/reports/{name}")
    async def report(request: Request, name: str) -> Response:
        if report_path(settings.outbox, name) is None:
            raise HTTPException(404, f"no report named {name} in the outbox")
        listed = {r.name: r for r in await run_in_threadpool(list_reports, settings.outbox)}
        batch = listed[name].batch if name in listed else None
        result = await run_in_threadpool(read_ledger, settings, batch) if batch is not None else None
        return web.page(request, "report.html", name=name, batch=batch,
                        gallery=gallery(result, web.engine.model.classes) if result is not None else None)

    @app.get("/reports/{name}/download")
    async def download(name: str) -> Response:
        handle = await run_in_threadpool(open_report, settings.outbox, name)
        if handle is None:
            raise HTTPException(404, f"no report named {name} in the outbox")
        size = os.fstat(handle.fileno()).st_size
        return StreamingResponse(_blocks(handle), media_type=XLSX, headers={
            "Content-Disposition": f'attachment; filename="{name}"', "Content-Length": str(size)})


def _blocks(handle: BinaryIO) -> Iterator[bytes]:
    """An open file's bytes in blocks, then it is closed (Starlette reads a plain iterator on its thread pool)."""
    with handle:
        yield from iter(lambda: handle.read(1 << 16), b"")


def _add_status(app: FastAPI, web: Web) -> None:
    settings = web.settings

    @app.get("/model")
    async def model(request: Request) -> Response:
        view = await run_in_threadpool(model_view, settings, web.engine.info)  # reads the ledger
        return web.page(request, "model.html", view=view)

    @app.get("/health")
    async def health(request: Request) -> Response:
        batch = await run_in_threadpool(last_batch, settings)
        newest = await run_in_threadpool(list_reports, settings.outbox) if settings.outbox.is_dir() else []
        return web.page(request, "health.html", pool=web.pool, batch=batch, newest=newest[0] if newest else None,
                        inbox=await run_in_threadpool(inbox_waiting, settings.inbox),
                        last_done=time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(web.pool.last_done))
                        if web.pool.last_done else None)

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/healthz")
    async def healthz() -> Response:
        return JSONResponse({"status": "ok", "queue": web.pool.pending})
