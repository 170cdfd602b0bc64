"""A child process that runs `python -m MODULE FD` and talks over a socket pair: the decoding workers' and the
notification couriers' way of keeping code that may crash or hang out of the service's own process.

A plain subprocess rather than a multiprocessing child: it never re-imports the caller's __main__, and it
starts with only what its module imports. Killing it is always possible, whatever it is doing.

Every child the scorer starts is a Reaped: its threads reap their children one at a time. Two threads
each reaping a child at the same moment (a decoding worker that crashed, latest.xlsx's rebuild that
finished) were seen on a 2-core machine (Linux 6.18) to spin both cores in the kernel (wait4 ->
release_task -> shrink_dcache_parent), unkillable, for half an hour: the task they waited on had no
core left to finish on. One reaper at a time leaves it one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

# Held while a thread of this process reaps (waitpid) one of its children. Reentrant: a Popen collected by
# the garbage collector inside a reap polls its own child from the same thread.
_REAPING = threading.RLock()


class Reaped(subprocess.Popen):  # type: ignore[type-arg]
    """subprocess.Popen whose waits and polls reap under one lock per process, never two threads at once.

    A blocking wait is made of non-blocking ones a few milliseconds apart, so that the lock is only ever held
    for one waitpid: a child that takes long to end never holds up another thread's reap.
    """

    def _try_wait(self, wait_flags: int) -> tuple[int, int]:
        if wait_flags & os.WNOHANG:
            with _REAPING:
                return super()._try_wait(wait_flags)  # type: ignore[misc,no-any-return]
        while True:
            with _REAPING:
                pid, status = super()._try_wait(wait_flags | os.WNOHANG)  # type: ignore[misc]
            if pid:
                return pid, status
            time.sleep(0.005)

    def _internal_poll(self, *args: Any, **kwargs: Any) -> int | None:
        with _REAPING:
            return super()._internal_poll(*args, **kwargs)  # type: ignore[misc,no-any-return]


class Child:
    """One child process and the pipe to it, started on demand and killed (never waited on) when it must go."""

    def __init__(self, module: str, *, quiet: bool = False) -> None:
        """`quiet`: the child's standard output goes nowhere (its errors still reach the service's log)."""
        self._module, self._quiet = module, quiet
        self._process: Reaped | None = None
        self.conn: Connection | None = None

    @property
    def alive(self) -> bool:
        """Whether a child is running now."""
        return self._process is not None and self._process.poll() is None

    @property
    def exitcode(self) -> int | None:
        """How the last child ended (None while it runs, or when none was started)."""
        return self._process.poll() if self._process is not None else None

    def start(self) -> Connection:
        """A fresh child and the pipe to it (raises OSError when no process can be started)."""
        self.kill()
        ours, theirs = socket.socketpair()
        try:
            self._process = Reaped([sys.executable, "-m", self._module, str(theirs.fileno())],
                                   pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL if self._quiet else None)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self.conn = Connection(ours.detach())
        return self.conn

    def stop(self, wait: float = 2.0) -> None:
        """Ask the child to finish (None down the pipe), give it `wait` seconds, then kill it."""
        if self.alive and self.conn is not None and self._process is not None:
            try:
                self.conn.send(None)
                self._process.wait(wait)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def kill(self) -> None:
        """Kill the child, whatever it is doing, and close the pipe."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(5)
        if self.conn is not None:
            self.conn.close()
        self._process, self.conn = None, None
