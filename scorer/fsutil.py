"""File-system idioms, each written once: atomic write, free name, safe open, content hash.

Every temporary file the scorer writes is named `.~<name>.<pid>.tmp` (see `temp_path`),
so start-up recovery can recognise and remove what a killed process left behind.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_PREFIX = ".~"
TEMP_SUFFIX = ".tmp"


class NotRegularFile(OSError):
    """The path is a link, folder, pipe, socket or device: it was not opened, or not read."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def temp_path(path: Path, folder: Path | None = None) -> Path:
    """The temporary name for writing `path`: `.~<name>.<pid>.tmp`, beside it or at the top of `folder`."""
    return (folder or path.parent) / f"{TEMP_PREFIX}{path.name}.{os.getpid()}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of our temporaries."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def atomic_write(path: Path, content: bytes | str | Callable[[Path], object], *, folder: Path | None = None,
                 durable: bool = False) -> Path:
    """Write `path` whole or not at all: into a temporary name, optionally fsync, then rename over it.

    `content` is bytes, text (UTF-8) or a function that writes the given temporary path.
    `folder` puts the temporary elsewhere on the same filesystem (where recovery looks).
    """
    tmp = temp_path(path, folder)
    try:
        if isinstance(content, bytes):
            tmp.write_bytes(content)
        elif isinstance(content, str):
            tmp.write_text(content, encoding="utf-8")
        else:
            content(tmp)
        if durable:
            fsync(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync(path.parent)
    return path


def fsync(path: Path) -> None:
    """Flush a file's content, or a folder's entries, to disk, so a rename survives a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def numbered(wanted: Path) -> Iterator[Path]:
    """`wanted`, then `stem-2.ext`, `stem-3.ext`, ... without end."""
    yield wanted
    for n in itertools.count(2):
        yield wanted.with_name(f"{wanted.stem}-{n}{wanted.suffix}")


def free_name(wanted: Path, taken: Collection[Path] = (), also: Callable[[Path], Path] | None = None) -> Path:
    """The first of `numbered(wanted)` that is neither on disk nor in `taken` (nor is `also(name)` on disk)."""
    for candidate in numbered(wanted):
        clash = os.path.lexists(candidate) or candidate in taken
        if also is not None:
            clash = clash or os.path.lexists(also(candidate))
        if not clash:
            return candidate
    raise AssertionError("unreachable")


def remove_temps(folders: Collection[Path]) -> list[Path]:
    """Delete our temporaries that a killed process left at the top of these folders; return them."""
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}"):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def open_regular(path: Path) -> BinaryIO:
    """Open a regular file for reading without following a link or blocking on a pipe.

    Raises NotRegularFile for anything else; FileNotFoundError and other OSErrors pass through.
    """
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(file_kind(st.st_mode))
    # O_NOFOLLOW and O_NONBLOCK: if the name was swapped for a link or a FIFO since lstat,
    # the open fails or returns at once instead of following it or blocking forever.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    handle = os.fdopen(fd, "rb")
    mode = os.fstat(handle.fileno()).st_mode
    if not stat.S_ISREG(mode):
        handle.close()
        raise NotRegularFile(file_kind(mode))
    return handle


def file_kind(mode: int) -> str:
    """What a non-regular file is, in plain words."""
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "named pipe"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def sha256_handle(handle: BinaryIO) -> str:
    """The SHA-256 of what is left to read in an open binary file, read in blocks."""
    digest = hashlib.sha256()
    for block in iter(lambda: handle.read(1 << 20), b""):
        digest.update(block)
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file."""
    with open(path, "rb") as handle:
        return sha256_handle(handle)


def sha256_regular(path: Path) -> str | None:
    """The SHA-256 of a regular file, or None when it is gone, unreadable or not a regular file."""
    try:
        with open_regular(path) as handle:
            return sha256_handle(handle)
    except OSError:
        return None
