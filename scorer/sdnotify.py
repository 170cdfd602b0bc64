"""sd_notify(3): READY, STATUS and watchdog pings to systemd, shared by `scorer watch` and `scorer serve`."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class Notifier:
    """sd_notify(3) over NOTIFY_SOCKET, with no dependency; silent when not run by systemd."""

    def __init__(self, environ: Mapping[str, str] = os.environ) -> None:
        address = environ.get("NOTIFY_SOCKET", "")
        # An abstract socket is written with a leading '@' and addressed with a leading NUL.
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        for_us = environ.get("WATCHDOG_PID", str(os.getpid())) == str(os.getpid())
        # Ping at a third of the deadline, so one slow step does not cost a restart.
        self.interval = int(usec) / 3e6 if usec.isdigit() and for_us else 5.0
        self._last_ping = float("-inf")

    def send(self, *lines: str) -> None:
        """Send state lines such as READY=1 or STATUS=...; errors are logged, never raised."""
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            log.debug("sd_notify to %s failed: %s", self._address, exc)

    def ping(self) -> None:
        """WATCHDOG=1, at most once per interval."""
        now = time.monotonic()
        if now - self._last_ping >= self.interval:
            self._last_ping = now
            self.send("WATCHDOG=1")
