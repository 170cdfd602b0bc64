"""Find and vet input files: what is ignored, what is read, and what Pillow may open.

Only Pillow is imported here: this module runs inside the decoding worker processes,
which must start fast and stay small. Nothing here decodes a pixel.
"""

from __future__ import annotations

import errno
import fnmatch
import io
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageFile, UnidentifiedImageError

from scorer.context.plan import is_context_name
from scorer.errors import ImageError, TransientImageError
from scorer.fsutil import NotRegularFile, file_kind, open_regular

if TYPE_CHECKING:
    from scorer.settings import ImageSettings

# A half-copied JPEG must fail, not be scored with a grey bottom half.
ImageFile.LOAD_TRUNCATED_IMAGES = False

# Matched without regard to case: Windows and macOS shares write THUMBS.DB and Desktop.ini alike.
IGNORED_PATTERNS = (".*", "~$*", "*.part", "*.crdownload", "*.tmp", "*.filepart", "*.download", "thumbs.db",
                    "desktop.ini")

# Formats people drop that we may not accept, recognised by their first bytes so that
# the reason can say what the file is without letting Pillow open every format.
_MAGIC = (
    (b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"),
    (b"BM", "BMP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"%PDF", "PDF"),
    (b"8BPS", "PSD"),
)


@dataclass(frozen=True)
class ImageLimits:
    """What a file must satisfy before any pixel is decoded."""

    formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP")
    max_bytes: int = 100 * 2**20
    max_pixels: int = 100_000_000
    max_decode_bytes: int = 2**30

    @classmethod
    def from_settings(cls, images: ImageSettings) -> ImageLimits:
        """The limits that config.yaml's `images` section sets."""
        return cls(
            formats=tuple(f.upper() for f in images.formats),
            max_bytes=int(images.max_file_mb * 2**20),
            max_pixels=int(images.max_megapixels * 1e6),
            max_decode_bytes=images.decode_memory_mb * 2**20,
        )


def is_ignored_name(name: str) -> bool:
    """Hidden and temporary names are never scored: they are still being written or are not creatives."""
    folded = name.casefold()
    return any(fnmatch.fnmatchcase(folded, pattern) for pattern in IGNORED_PATTERNS)


def is_creative_name(name: str) -> bool:
    """Whether a file may be a creative by its name: not a plan or a sidecar (scorer.context.plan)."""
    return not is_context_name(name)


def find_candidates(paths: list[Path], wanted: Callable[[str], bool] = is_creative_name) -> list[Path]:
    """Every file under the given paths whose name is `wanted`, skipping hidden/temporary names, by mtime then name.

    By default, plans and sidecars (`plan.csv`, `*.txt`, `*.json`: scorer.context.plan) are left out:
    they are never scored as images.

    Folders are walked recursively without following symlinks. Symlinks and other
    non-regular entries are kept, so that they are rejected with a reason rather than
    silently skipped.
    """
    found: list[Path] = []
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not is_ignored_name(d))
                found += [Path(root, f) for f in files if not is_ignored_name(f) and wanted(f)]
                # os.walk lists symlinks to folders among dirs and does not follow them
                found += [Path(root, d) for d in dirs if Path(root, d).is_symlink() and wanted(d)]
        elif wanted(path.name):
            found.append(path)
    return sorted(set(found), key=_order_key)


def _order_key(path: Path) -> tuple[float, str]:
    try:
        mtime = path.lstat().st_mtime
    except OSError:
        mtime = 0.0
    return (mtime, str(path))



def read_regular_file(path: Path, max_bytes: int) -> tuple[bytes, os.stat_result]:
    """Read a regular file whole, refusing links, pipes, devices and oversized files without blocking."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(file_kind(st.st_mode))
        if st.st_size == 0:
            raise ImageError("empty file (0 bytes)")
        if st.st_size > max_bytes:
            raise ImageError(f"file too large: {st.st_size / 2**20:.0f} MB, limit {max_bytes / 2**20:.0f} MB")
        with open_regular(path) as handle:
            st = os.fstat(handle.fileno())
            data = handle.read(max_bytes + 1)
    except NotRegularFile as exc:
        raise ImageError(_NOT_REGULAR.get(exc.kind, f"not a regular file ({exc.kind}): not opened")) from None
    except FileNotFoundError:
        raise TransientImageError("file disappeared before it could be read") from None
    except OSError as exc:
        kind = TransientImageError if exc.errno in _PASSING else ImageError
        raise kind(f"cannot be opened: {exc.strerror}") from None
    if len(data) > max_bytes:
        raise ImageError(f"file too large: over {max_bytes / 2**20:.0f} MB")
    return data, st


# Errors a share gives for a moment (a permission being reset, a reconnect): the file is read again later.
_PASSING = {errno.EACCES, errno.EPERM, errno.EIO, errno.EAGAIN, errno.EBUSY, errno.ESTALE, errno.ETIMEDOUT,
            errno.EHOSTDOWN, errno.ECONNRESET}

_NOT_REGULAR = {"symbolic link": "symbolic link: not followed", "folder": "a folder, not a file"}


def open_image(data: bytes, limits: ImageLimits) -> Image.Image:
    """Open (not decode) an image from bytes, only in accepted formats and within the pixel limit."""
    # Pillow's own bomb check only warns below twice its limit and hides the dimensions; opening
    # parses headers only, so checking the size right here, before any pixel is decoded, is as safe
    # and lets the reason say how large the image is.
    Image.MAX_IMAGE_PIXELS = None
    try:
        im = Image.open(io.BytesIO(data), formats=list(limits.formats))
    except UnidentifiedImageError:
        raise ImageError(_unidentified_reason(data, limits)) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise ImageError("file is incomplete or corrupt") from None
    w, h = im.size
    if w * h > limits.max_pixels:
        raise ImageError(f"image too large: {w}×{h} pixels, limit {limits.max_pixels / 1e6:g} MP")
    return im


def _unidentified_reason(data: bytes, limits: ImageLimits) -> str:
    for magic, name in _MAGIC:
        if data.startswith(magic):
            if name in limits.formats:
                return "file is incomplete or corrupt"
            accepted = ", ".join(limits.formats)
            return f"{name} files are not accepted (accepted: {accepted}): convert it, or add {name} to images.formats"
    if data[8:12] == b"WEBP" and data.startswith(b"RIFF"):
        return "file is incomplete or corrupt" if "WEBP" in limits.formats else "WEBP files are not accepted"
    return f"not an image (accepted: {', '.join(limits.formats)}): save it in one of these formats"

