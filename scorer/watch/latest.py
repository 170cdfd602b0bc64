"""outbox/latest.xlsx, rebuilt on its own thread so that intake never waits for it.

    service loop --changed()--> pending --(watch.latest_interval after the last start)--> rebuild
    several batches inside one interval -> one rebuild (coalesced); no batch -> no rebuild
    a failed rebuild: logged with its cause, shown in STATUS=, retried after 1, 2, 4 ... intervals
    close(): a change not yet written is written before the service exits

The thread reads the ledger through its own connection (a Ledger is used from one thread), in
one snapshot, so a long read never blocks a batch being recorded.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from pathlib import Path

from scorer.report.latest_book import save_latest
from scorer.results import ModelInfo
from scorer.settings import Settings
from scorer.watch.ledger import Ledger
from scorer.watch.window import read_window

log = logging.getLogger(__name__)

LATEST_NAME = "latest.xlsx"
MAX_BACKOFF = 300.0  # seconds: a cause that lasts (a full disk) is still retried every 5 minutes


def rebuild_latest(ledger: Ledger, settings: Settings, info: ModelInfo) -> Path:
    """Rewrite outbox/latest.xlsx from one snapshot of the ledger and note the newest batch it includes."""
    started = time.monotonic()
    log.debug("rewriting %s", LATEST_NAME)
    content, window = read_window(ledger, settings, info, time.time())
    path = save_latest(settings.outbox / LATEST_NAME, content, window)
    ledger.put("latest_batch", str(window.newest_batch))
    log.debug("rewrote %s in %.1f s: the best %d of %d creatives, batches up to %d", path,
              time.monotonic() - started, len(content.result.scored), window.total().scored, window.newest_batch)
    return path


def latest_is_stale(ledger: Ledger) -> bool:
    """Whether batches were recorded since latest.xlsx was last written."""
    return ledger.get("latest_batch") != str(ledger.last_batch())


class LatestRebuilder:
    """Keeps outbox/latest.xlsx up to date from a background thread; `changed()` after each batch."""

    def __init__(self, settings: Settings, info: ModelInfo) -> None:
        self.settings = settings
        self.info = info
        self.problem: str | None = None  # why the last rebuild failed, while it keeps failing
        self._cond = threading.Condition()
        self._pending = False
        self._stopping = False
        self._due = 0.0  # monotonic time before which no rebuild starts
        self._failures = 0
        self._thread = threading.Thread(target=self._main, name="latest.xlsx", daemon=True)

    def start(self) -> None:
        """Start the thread; it rebuilds at once if batches were recorded since the last latest.xlsx."""
        self._thread.start()

    def changed(self) -> None:
        """A batch was recorded: rebuild once the interval allows (many calls, one rebuild)."""
        with self._cond:
            self._pending = True
            self._cond.notify()

    def close(self, timeout: float = 60.0) -> None:
        """Write what is still pending, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._pending and self._thread.is_alive():
            log.debug("writing the last changes to latest.xlsx before exiting")
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("latest.xlsx was still being written after %.0f s: left to the next start", timeout)

    def _main(self) -> None:
        ledger = Ledger(self.settings.state)  # sqlite3 connections belong to the thread that opened them
        try:
            if latest_is_stale(ledger):
                self.changed()
            while self._next():
                self._attempt(ledger)
            with self._cond:
                pending = self._pending
            if pending and not self._attempt(ledger):
                log.warning("latest.xlsx is out of date: it is rewritten when the service starts again")
        finally:
            ledger.close()

    def _next(self) -> bool:
        """Wait until a rebuild is due; False once the service is stopping."""
        with self._cond:
            while not self._stopping:
                wait = self._due - time.monotonic()
                if self._pending and wait <= 0:
                    self._pending = False
                    return True
                self._cond.wait(wait if self._pending else None)
            return False

    def _attempt(self, ledger: Ledger) -> bool:
        started = time.monotonic()
        try:
            rebuild_latest(ledger, self.settings, self.info)
        except Exception as exc:  # noqa: BLE001 - whatever fails here, intake goes on and it is retried
            self._failed(exc)
            return False
        if self._failures:
            log.info("latest.xlsx written again after %d failed tries", self._failures)
        self._failures, self.problem = 0, None
        with self._cond:
            self._due = started + self.settings.watch.latest_interval
        return True

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        delay = min(max(self.settings.watch.latest_interval, 1.0) * 2 ** (self._failures - 1), MAX_BACKOFF)
        cause = f"{type(exc).__name__}: {exc}"
        self.problem = f"latest.xlsx not written ({cause})"
        if isinstance(exc, (OSError, sqlite3.Error)):
            log.warning("%s: try %d failed, retrying in %.0f s", self.problem, self._failures, delay)
        else:  # not the disk or the share: a bug, so keep its traceback
            log.exception("%s: try %d failed, retrying in %.0f s", self.problem, self._failures, delay)
        with self._cond:
            self._pending = True
            self._due = time.monotonic() + delay
