"""Uploads: read within the size and count limits, saved under generated names in a private folder.

An upload's own name is only ever shown (on the page and in the report), never used as a path:
the bytes go to `<private folder>/0001`, `0002`, ..., and are then vetted and decoded by the
engine exactly like a file dropped into the inbox.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

from starlette.datastructures import UploadFile
from starlette.requests import Request

from scorer.errors import UploadError
from scorer.results import BatchResult
from scorer.scoring.engine import Item
from scorer.settings import ServeSettings

FIELD = "creatives"
_DRAIN_BYTES = 32 * 2**20  # read past the limit this far, so a browser sees the answer and not a reset
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")

Message = MutableMapping[str, Any]


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the name to show, and its bytes as the form parser spooled them."""

    name: str
    file: BinaryIO


class _TooLarge(Exception):
    """The request body went past the limit while it was being read."""


def display_name(raw: str | None, n: int) -> str:
    """The name to show for an upload: the last part of what the browser sent, without control characters."""
    name = _UNSAFE.sub("", re.split(r"[/\\]", raw or "")[-1]).strip()[:200]
    return name or f"upload-{n}"


def too_large(size: int | None, limit_mb: float) -> UploadError:
    """The one error for an upload over `serve.max_upload_mb`."""
    got = f"{size / 2**20:.1f} MB" if size is not None else "more"
    return UploadError(f"upload too large: {got}, limit {limit_mb:g} MB: send fewer or smaller files, "
                       "or raise serve.max_upload_mb in config.yaml", status=413)


async def read_uploads(request: Request, serve: ServeSettings) -> tuple[list[Upload], Callable[[], Awaitable[None]]]:
    """The uploaded files of a Try form, and a function that deletes their spooled copies."""
    limit = int(serve.max_upload_mb * 2**20)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        await _drain(request)
        raise too_large(int(declared), serve.max_upload_mb)
    counted = Request(request.scope, _counting(request.receive, limit))
    try:
        form = await counted.form(max_files=serve.max_files + 1, max_fields=8)
    except _TooLarge:
        raise too_large(None, serve.max_upload_mb) from None
    files = [value for value in form.getlist(FIELD) if isinstance(value, UploadFile) and value.filename]
    if len(files) > serve.max_files:
        await form.close()
        raise UploadError(f"too many files: {len(files)}, limit {serve.max_files}: send them in smaller groups, "
                          "or raise serve.max_files in config.yaml", status=413)
    if not files:
        await form.close()
        raise UploadError("no file chosen: choose or drop one or more images")
    uploads = [Upload(display_name(f.filename, n), f.file) for n, f in enumerate(files, start=1)]
    return uploads, form.close


def _counting(receive: Callable[[], Awaitable[Message]], limit: int) -> Callable[[], Awaitable[Message]]:
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _TooLarge()
        return message

    return counted


async def _drain(request: Request) -> None:
    read = 0
    async for chunk in request.stream():
        read += len(chunk)
        if read > _DRAIN_BYTES:
            return


def save_uploads(uploads: Sequence[Upload], folder: Path) -> list[Item]:
    """Copy each upload into `folder` (private, made here) as 0001, 0002, ...; the items to score."""
    folder.mkdir(mode=0o700)
    items = []
    for n, upload in enumerate(uploads, start=1):
        path = folder / f"{n:04d}"
        upload.file.seek(0)
        with open(path, "xb") as out:
            shutil.copyfileobj(upload.file, out, 1 << 20)
        items.append(Item(path, upload.name))
    return items


def keep_scored(result: BatchResult, items: Sequence[Item], outbox: Path, today: date) -> None:
    """Move scored uploads to outbox/uploads/<date>/<sha256>.<ext> (serve.keep_uploads)."""
    by_location = {str(item.path): item.path for item in items}
    folder = outbox / "uploads" / today.isoformat()
    for scored in result.scored:
        source = by_location.get(scored.location)
        if source is None or not source.exists():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"{scored.sha256}{_EXTENSIONS.get(scored.format, '')}"
        if not target.exists():  # the same content kept earlier is the same file
            shutil.move(source, target)
