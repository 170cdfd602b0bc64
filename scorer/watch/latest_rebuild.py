"""outbox/latest.xlsx, rebuilt on its own thread so that intake never waits for it.

    service loop --changed()--> pending --(watch.latest_interval after the last start)--> rebuild
    several batches inside one interval -> one rebuild (coalesced); no batch -> no rebuild
    a failed rebuild: logged with its cause, shown in STATUS=, retried after 1, 2, 4 ... intervals
    close(): a change not yet written is written before the service exits, at full priority (a
             low-priority rebuild under way is stopped and done again at once)

Each rebuild runs in a child process (`python -m scorer.watch.latest_rebuild`) at a lower CPU priority:
it shares neither the GIL nor the CPU's first claim with scoring, its memory goes back to the
system when it exits, and a crash in it costs one rebuild. It reads the ledger through its own
connection, in one snapshot, so a long read never blocks a batch being recorded.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from scorer.child import Reaped
from scorer.errors import ScorerError
from scorer.ledger.latest_window import read_window
from scorer.ledger.schema import model_from_json, model_json
from scorer.ledger.store import Ledger
from scorer.report.latest_book import LATEST_NAME, save_latest
from scorer.results import ModelInfo
from scorer.settings import ReportSettings, Settings, WatchSettings

log = logging.getLogger(__name__)

MAX_BACKOFF = 300.0  # seconds: a cause that lasts (a full disk) is still retried every 5 minutes
CHILD_TIMEOUT = 900.0  # seconds before a rebuild that hangs (a stalled share) is killed and retried
STOP_TIMEOUT = 45.0  # seconds close() waits: within the unit's TimeoutStopSec=60
NICE = 10  # a rebuild's CPU priority while the service scores


def rebuild_latest(ledger: Ledger, settings: Settings, info: ModelInfo) -> dict[str, int]:
    """Rewrite outbox/latest.xlsx from one snapshot of the ledger and note the newest batch it includes."""
    content, window = read_window(ledger, settings, info, time.time())
    save_latest(settings.outbox / LATEST_NAME, content, window)
    ledger.put("latest_batch", str(window.newest_batch))
    return {"listed": len(content.result.scored), "scored": window.total().scored, "batch": window.newest_batch}


def latest_is_stale(ledger: Ledger) -> bool:
    """Whether batches were recorded since latest.xlsx was last written."""
    return ledger.get("latest_batch") != str(ledger.last_batch())


class LatestRebuilder:
    """Keeps outbox/latest.xlsx up to date from a background thread; `changed()` after each batch."""

    def __init__(self, settings: Settings, info: ModelInfo) -> None:
        self.settings = settings
        self._request = _request(settings, info)
        self.problem: str | None = None  # why the last rebuild failed, while it keeps failing
        self._cond = threading.Condition()
        self._pending = False
        self._stopping = False
        self._due = 0.0  # monotonic time before which no rebuild starts
        self._failures = 0
        self._child: Reaped | None = None
        self._thread = threading.Thread(target=self._main, name="latest.xlsx", daemon=True)

    def start(self) -> None:
        """Start the thread; it rebuilds at once if batches were recorded since the last latest.xlsx."""
        self._thread.start()

    def changed(self) -> None:
        """A batch was recorded: rebuild once the interval allows (many calls, one rebuild)."""
        with self._cond:
            self._pending = True
            self._cond.notify()

    def use_model(self, info: ModelInfo) -> None:
        """A reload brought in another model: the next latest.xlsx names it on its Model sheet."""
        with self._cond:
            self._request = _request(self.settings, info)

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Write what is still pending, then stop the thread."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
            if self._child is not None and self._child.poll() is None:
                self._child.terminate()  # it removes its temporary file; redone at full priority below
        if self._pending and self._thread.is_alive():
            log.debug("writing the last changes to latest.xlsx before exiting")
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("latest.xlsx was still being written after %.0f s: left to the next start", timeout)

    def _main(self) -> None:
        ledger = Ledger(self.settings.state)  # sqlite3 connections belong to the thread that opened them
        try:
            stale = latest_is_stale(ledger)
        finally:
            ledger.close()
        if stale:
            self.changed()
        while self._next():
            self._attempt()
        with self._cond:
            pending = self._pending
        if pending and not self._attempt(nice=0):
            log.warning("latest.xlsx is out of date: it is rewritten when the service starts again")

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

    def _attempt(self, nice: int = NICE) -> bool:
        started = time.monotonic()
        log.debug("rewriting %s", LATEST_NAME)
        try:
            code, out, err = self._run_child(nice)
            if code != 0 and nice and self._stopping:
                with self._cond:  # stopped by close() to be done again at full priority
                    self._pending = True
                return False
            if code != 0:
                lines = err.strip().splitlines() or [f"the rebuild exited with {code}"]
                raise RebuildFailed(lines[-1], err)
            done = json.loads(out)
        except (OSError, subprocess.SubprocessError, RebuildFailed, ValueError) as exc:
            self._failed(exc)
            return False
        log.debug("rewrote %s in %.1f s (peak %d MiB): the best %d of %d creatives, batches up to %d",
                  self.settings.outbox / LATEST_NAME, time.monotonic() - started, done["rss_mib"], done["listed"],
                  done["scored"], done["batch"])
        if self._failures:
            log.info("latest.xlsx written again after %d failed tries", self._failures)
        self._failures, self.problem = 0, None
        with self._cond:
            self._due = started + self.settings.watch.latest_interval
        return True

    def _run_child(self, nice: int) -> tuple[int, str, str]:
        with self._cond:
            if self._stopping:
                nice = 0  # nothing left to give way to
            child = self._child = Reaped(
                [sys.executable, "-m", "scorer.watch.latest_rebuild"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
        try:
            out, err = child.communicate(json.dumps({**self._request, "nice": nice}), timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise
        finally:
            with self._cond:
                self._child = None
        return child.returncode, out, err

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        delay = min(max(self.settings.watch.latest_interval, 1.0) * 2 ** (self._failures - 1), MAX_BACKOFF)
        cause = str(exc) if isinstance(exc, RebuildFailed) else f"{type(exc).__name__}: {exc}"
        self.problem = f"latest.xlsx not written ({cause})"
        log.warning("%s: try %d failed, retrying in %.0f s", self.problem, self._failures, delay)
        if isinstance(exc, RebuildFailed) and exc.traceback:
            log.error("the rebuild failed with a bug:\n%s", exc.traceback)
        with self._cond:
            self._pending = True
            self._due = time.monotonic() + delay


class RebuildFailed(Exception):
    """The child process could not write latest.xlsx; its last line of output says why."""

    def __init__(self, cause: str, output: str) -> None:
        super().__init__(cause)
        self.traceback = output if "Traceback (most recent call last)" in output else ""


def _request(settings: Settings, info: ModelInfo) -> dict[str, object]:
    """What the child needs to know; it comes as JSON on its stdin."""
    watch = settings.watch
    return {"outbox": str(settings.outbox), "state": str(settings.state), "latest_days": watch.latest_days,
            "latest_rows": watch.latest_rows, "report": dataclasses.asdict(settings.report), "info": model_json(info)}


def _stop(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds, so the temporary file is removed on the way out


def _child() -> int:
    """One rebuild, asked for on stdin; prints what it wrote as JSON, or the cause of failing on stderr."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the service decides
    signal.signal(signal.SIGTERM, _stop)
    request = json.loads(sys.stdin.read())
    os.nice(request["nice"])  # while the service scores, scoring has the first claim on the CPU
    settings = Settings(outbox=Path(request["outbox"]), state=Path(request["state"]),
                        watch=WatchSettings(latest_days=request["latest_days"], latest_rows=request["latest_rows"]),
                        report=ReportSettings(**request["report"]))
    try:
        ledger = Ledger(settings.state)
        try:
            done = rebuild_latest(ledger, settings, model_from_json(request["info"]))
        finally:
            ledger.close()
    except (OSError, sqlite3.Error, ScorerError) as exc:  # the disk, the share or the ledger: no bug
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({**done, "rss_mib": _peak_rss_mib()}))
    return 0


def _peak_rss_mib() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) // 1024
    return 0


if __name__ == "__main__":
    sys.exit(_child())
