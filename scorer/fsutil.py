"""File-system idioms, each written once: atomic write, free name, safe open, content hash.

Every temporary file the scorer writes is named `.~<name>.<pid>.tmp` (see `temp_path`),
so start-up recovery can recognise and remove what a killed process left behind.
"""

from __future__ import annotations

import errno
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


NAME_MAX = 255


def shorten_name(name: str, room: int) -> str:
    """`name` cut (at a character boundary) so that its file-system bytes leave `room` bytes free in NAME_MAX."""
    raw = os.fsencode(name)
    if len(raw) + room <= NAME_MAX:
        return name
    return os.fsdecode(raw[: NAME_MAX - room]).encode("utf-8", "surrogateescape").decode("utf-8", "ignore")


def temp_path(path: Path, folder: Path | None = None) -> Path:
    """The temporary name for writing `path`: `.~<name>.<pid>.tmp`, beside it or at the top of `folder`."""
    tail = f".{os.getpid()}{TEMP_SUFFIX}"
    # A name near the 255-byte limit must still leave room for the prefix and the tail.
    name = shorten_name(path.name, len(TEMP_PREFIX) + len(tail))
    return (folder or path.parent) / f"{TEMP_PREFIX}{name}{tail}"


def create_temp(path: Path, folder: Path | None = None) -> tuple[Path, int]:
    """Create `temp_path(path, folder)` exclusively, never through a link: return it and its open descriptor.

    O_EXCL|O_NOFOLLOW: a link or file planted under the temporary name is removed (it is ours by
    its name, and unlinking a link never touches its target) and the file is created afresh.
    """
    tmp = temp_path(path, folder)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return tmp, os.open(tmp, flags, 0o644)
    except FileExistsError:
        os.unlink(tmp)
        return tmp, os.open(tmp, flags, 0o644)


def is_temp_name(name: str) -> bool:
    """Whether a file name is one of our temporaries."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def atomic_write(path: Path, content: bytes | str | BinaryIO | Callable[[Path], object], *,
                 folder: Path | None = None, durable: bool = False,
                 progress: Callable[[int], None] = lambda n: None) -> Path:
    """Write `path` whole or not at all: into a temporary name, optionally fsync, then rename over it.

    `content` is bytes, text (UTF-8), an open file to copy from (calling `progress` per block)
    or a function that writes the given temporary path. `folder` puts the temporary elsewhere
    on the same filesystem (where recovery looks).
    """
    tmp, fd = create_temp(path, folder)
    try:
        created = os.fstat(fd)
        with os.fdopen(fd, "wb") as handle:
            if isinstance(content, (bytes, str)):
                handle.write(content.encode("utf-8") if isinstance(content, str) else content)
            elif not callable(content):
                for block in iter(lambda: content.read(1 << 20), b""):
                    handle.write(block)
                    progress(len(block))
            if durable and not callable(content):
                handle.flush()
                os.fsync(handle.fileno())
        if callable(content):
            content(tmp)
            if durable:
                fsync(tmp)
        now = os.lstat(tmp)
        if (now.st_dev, now.st_ino) != (created.st_dev, created.st_ino) or not stat.S_ISREG(now.st_mode):
            raise OSError(errno.EEXIST, f"{tmp} was replaced while it was written: not published")
        os.replace(tmp, path)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    if durable:
        fsync(path.parent)
    return path


def ensure_dir(root: Path, folder: Path) -> Path:
    """Create `folder` under `root` one level at a time, refusing a symbolic link or file on the way.

    A link planted in the outbox (say `scored/2026-01-01 -> /etc`) must not redirect moves and writes.
    The nearest existing folder at or above `root` is trusted as configured; everything below it is checked.
    """
    while not os.path.lexists(root) and root != root.parent:
        root = root.parent
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in folder.relative_to(root).parts:
            try:
                os.mkdir(part, 0o777, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                raise OSError(exc.errno, f"{part} in {folder} is a link or a file: not followed") from None
            os.close(fd)
            fd = inner
    finally:
        os.close(fd)
    return folder


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
            clash = clash or also(candidate) in taken or os.path.lexists(also(candidate))
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


def read_regular(path: Path) -> bytes:
    """The whole content of a regular file, opened as open_regular opens it."""
    with open_regular(path) as handle:
        return handle.read()


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


def sha256_bytes(data: bytes) -> str:
    """The SHA-256 of bytes in memory, as hex: what every pin and content hash in the scorer is."""
    return hashlib.sha256(data).hexdigest()


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
