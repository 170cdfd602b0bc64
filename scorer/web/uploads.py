"""Uploads: read within the size and count limits, saved under generated names in a private folder.

An upload's own name is only ever shown (on the page and in the report), never used as a path:
the bytes go to `<private folder>/0001`, `0002`, ..., and are then vetted and decoded by the
engine exactly like a file dropped into the inbox. So the content decides what an upload is, a
still or a video (scorer.decoding.video_probe), never its name or the type the browser claims.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import BinaryIO

from starlette.datastructures import UploadFile
from starlette.requests import Request

from scorer.errors import UploadError
from scorer.fsutil import atomic_write, ensure_dir, open_regular
from scorer.results import BatchResult
from scorer.scoring.engine import Item
from scorer.settings import ServeSettings
from scorer.textsafe import display_text
from scorer.web.gate import BodyTooLarge, upload_too_large

FIELD = "creatives"
# a kept upload's name ends as its content's format, whatever it was called
_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "MP4": ".mp4", "MOV": ".mov", "M4V": ".m4v",
               "M4A": ".m4a", "WEBM": ".webm", "MKV": ".mkv"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the name to show, and its bytes as the form parser spooled them."""

    name: str
    file: BinaryIO


def display_name(raw: str | None, n: int) -> str:
    """The name to show for an upload: the last part of what the browser sent, cleaned for display."""
    name = display_text(re.split(r"[/\\]", raw or "")[-1]).strip()[:200]
    return name or f"upload-{n}"


async def read_uploads(request: Request, serve: ServeSettings) -> tuple[list[Upload], Callable[[], Awaitable[None]]]:
    """The uploaded files of a Try form, and a function that deletes their spooled copies.

    The gate has already refused a body declared too large; one that streams past the limit stops here.
    """
    try:
        form = await request.form(max_files=serve.max_files + 1, max_fields=8)
    except BodyTooLarge:
        raise UploadError(upload_too_large(None, serve.max_upload_mb), status=413) from None
    files = [value for value in form.getlist(FIELD) if isinstance(value, UploadFile) and value.filename]
    if len(files) > serve.max_files:
        await form.close()
        raise UploadError(f"too many files: {len(files)}, limit {serve.max_files}: send them in smaller groups, "
                          "or raise serve.max_files in config.yaml", status=413)
    if not files:
        await form.close()
        raise UploadError("no file chosen: choose or drop one or more images or videos")
    uploads = [Upload(display_name(f.filename, n), f.file) for n, f in enumerate(files, start=1)]
    return uploads, form.close


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
    """Copy scored uploads to outbox/uploads/<date>/<sha256>.<ext> (serve.keep_uploads), never through a link.

    A link or file planted at outbox/uploads or its dated folder is refused with a log line; scoring is kept.
    """
    by_location = {str(item.path): item.path for item in items}
    folder = outbox / "uploads" / today.isoformat()
    for scored in result.scored:
        source = by_location.get(scored.location)
        if source is None or not source.exists():
            continue
        target = folder / f"{scored.sha256}{_EXTENSIONS.get(scored.format, '')}"
        try:
            ensure_dir(outbox, folder)
            if not os.path.lexists(target):  # the same content kept earlier is the same file
                with open_regular(source) as handle:
                    atomic_write(target, handle)
        except OSError as exc:
            log.warning("upload not kept in %s: %s (a link in the outbox is never followed)", folder, exc)
            return
