"""The inbox lease: one inbox, one service, even across state folders and hosts.

The state lock (flock) only stops a second service that shares the state folder. The lease
is a small file in the inbox itself, `.scorer-lease`, naming the host and pid that serve it;
its hidden name keeps it out of scoring. A second service refuses to start while the lease
is live: on this host while its pid runs, from another host while its mtime is fresh (the
holder touches it every minute).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from scorer.errors import ServiceError
from scorer.fsutil import atomic_write

log = logging.getLogger(__name__)

LEASE_NAME = ".scorer-lease"
REFRESH_S = 60.0
# A lease from another host that has not been touched for this long is taken over.
STALE_S = 10 * REFRESH_S


class Lease:
    """A held inbox lease; `refresh` keeps it fresh for services on other hosts."""

    def __init__(self, path: Path | None, owner: str) -> None:
        self.path, self.owner = path, owner
        self._touched = time.monotonic()

    def refresh(self) -> None:
        """Touch the lease, at most once a minute."""
        if self.path is None or time.monotonic() - self._touched < REFRESH_S:
            return
        self._touched = time.monotonic()
        try:
            os.utime(self.path, follow_symlinks=False)
        except OSError as exc:
            log.warning("cannot refresh the inbox lease %s (%s)", self.path, exc.strerror)


def _owner() -> str:
    return f"{socket.gethostname()} {os.getpid()}"


def _holder(path: Path) -> tuple[str, int, float] | None:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").split()
        age = time.time() - os.lstat(path).st_mtime
    except FileNotFoundError:
        return None
    host, pid = (text[0], int(text[1])) if len(text) >= 2 and text[1].isdigit() else ("?", 0)
    return host, pid, age


def _live(host: str, pid: int, age: float) -> bool:
    if host != socket.gethostname():
        return age < STALE_S
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it runs, as another user
    return True


@contextmanager
def inbox_lease(inbox: Path) -> Iterator[Lease]:
    """Hold the inbox's lease while the service runs, or refuse to start, naming the service that holds it."""
    path = inbox / LEASE_NAME
    owner = _owner()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except FileExistsError:
        holder = _holder(path)
        if holder is not None and _live(*holder):
            host, pid, _ = holder
            raise ServiceError(
                f"another scorer watch (pid {pid} on host {host}) is serving the inbox {inbox}: stop it first, "
                f"or give this one its own inbox (if that service is gone for good, delete {path})") from None
        if holder is not None:
            log.warning("taking over the inbox lease of pid %d on host %s, which is gone", holder[1], holder[0])
        atomic_write(path, owner + "\n")
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        log.warning("cannot write the inbox lease %s (%s): make sure no other service watches this inbox",
                    path, exc.strerror)
        yield Lease(None, owner)
        return
    else:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(owner + "\n")
    try:
        yield Lease(path, owner)
    finally:
        holder = _holder(path)
        if holder is not None and f"{holder[0]} {holder[1]}" == owner:
            path.unlink(missing_ok=True)
