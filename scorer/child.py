"""A child process that runs `python -m MODULE FD` and talks over a socket pair: the decoding workers' and the
notification couriers' way of keeping code that may crash or hang out of the service's own process.

A plain subprocess rather than a multiprocessing child: it never re-imports the caller's __main__, and it
starts with only what its module imports. Killing it is always possible, whatever it is doing.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from multiprocessing.connection import Connection


class Child:
    """One child process and the pipe to it, started on demand and killed (never waited on) when it must go."""

    def __init__(self, module: str, *, quiet: bool = False) -> None:
        """`quiet`: the child's standard output goes nowhere (its errors still reach the service's log)."""
        self._module, self._quiet = module, quiet
        self._process: subprocess.Popen[bytes] | None = None
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
            self._process = subprocess.Popen([sys.executable, "-m", self._module, str(theirs.fileno())],
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
