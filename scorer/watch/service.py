"""`scorer watch` as a long-running service: the state lock, signals and the work loop.

    lock state, lease the inbox -> recover from the ledger -> load the model -> start watching -> READY=1
    loop: poll the intake, ping the watchdog, process each closed batch, tell latest.xlsx's rebuilder,
          retry failed writes; each report's notification is queued as it is written (scorer.notify)
    SIGHUP (systemctl reload) -> after the batch at hand: re-read config.yaml, verify and load the pinned
          model; a model that fails keeps the old one serving
    SIGTERM/SIGINT -> finish or abandon the batch -> STOPPING=1 -> exit 0
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as StillRunning
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TypeVar

from scorer.config import load_settings, require_readable_dir, require_writable_dir
from scorer.errors import ConfigError, ScorerError, ServiceError
from scorer.ledger.store import Ledger
from scorer.notify.notices import Notices
from scorer.scoring.assembly import open_engine
from scorer.scoring.engine import Engine
from scorer.sdnotify import Notifier
from scorer.settings import Settings
from scorer.settings_text import log_settings
from scorer.watch.batch import BatchSummary, HotFolder
from scorer.watch.intake import Intake, ObserverFactory, make_observer
from scorer.watch.latest_rebuild import LatestRebuilder
from scorer.watch.lease import Lease, inbox_lease

log = logging.getLogger(__name__)

LOCK_NAME = "scorer.lock"
_T = TypeVar("_T")


@dataclass(frozen=True)
class Status:
    """What the service is doing, for the live display and the final summary."""

    state: str = "starting"
    waiting: int = 0
    batches: int = 0
    scored: int = 0
    rejected: int = 0
    duplicates: int = 0
    last_report: Path | None = None
    latest_problem: str | None = None
    trouble: str = ""

    def line(self) -> str:
        """One line for a terminal or systemd's STATUS=."""
        last = f"; last report {self.last_report.name}" if self.last_report else ""
        problem = f"; {self.latest_problem}" if self.latest_problem else ""
        trouble = f"; {self.trouble} (retrying)" if self.trouble else ""
        return (f"{self.state}; {self.waiting} waiting; {self.batches} batches: {self.scored} scored, "
                f"{self.rejected} rejected, {self.duplicates} duplicates{last}{trouble}{problem}")

    def counted(self, batch: BatchSummary) -> Status:
        """This status with one more batch added in."""
        return replace(self, batches=self.batches + 1, scored=self.scored + batch.scored,
                       rejected=self.rejected + batch.rejected, duplicates=self.duplicates + batch.duplicates,
                       last_report=batch.report)


@dataclass
class _Loop:
    """The work loop's collaborators and the status it reports."""

    intake: Intake
    notifier: Notifier
    on_status: Callable[[Status], None]
    stopping: threading.Event
    reloading: threading.Event
    lease: Lease
    notices: Notices
    status: Status = field(default_factory=Status)

    def report(self, **changes: object) -> None:
        status = replace(self.status, **changes)  # type: ignore[arg-type]
        if status != self.status:
            self.status = status
            self.on_status(status)
            self.notifier.send(f"STATUS={status.line()}")

    def heartbeat(self, _done: int = 0) -> None:
        # WATCHDOG=1 only from this thread, and only while events can still reach us: a hung loop
        # or a dead observer that cannot be restarted stops the pings, and systemd restarts us.
        if self.intake.alive or self.intake.inbox_missing:
            self.notifier.ping()
            self.lease.refresh()


@dataclass
class _Current:
    """The engine in use; a reload swaps it for one with the newly pinned model."""

    engine: Engine

    def close(self) -> None:
        self.engine.close()


def watch_inbox(settings: Settings, *, once: bool = False, on_status: Callable[[Status], None] = lambda s: None,
          observer_factory: ObserverFactory = make_observer) -> Status:
    """Run the hot-folder service until SIGTERM/SIGINT (or, with `once`, until the inbox is done)."""
    inbox = require_readable_dir(settings.inbox, "inbox")
    require_readable_dir(settings.outbox, "outbox")
    _check_layout(settings)  # before anything is created: a state folder inside the inbox is never made
    settings.state.mkdir(parents=True, exist_ok=True)
    require_writable_dir(settings.state, "state")
    stopping, reloading = threading.Event(), threading.Event()
    # Closed in reverse: STOPPING=1, stop watching, stop the decoders, stop the senders, close the ledger, unlock.
    with ExitStack() as stack:
        stack.enter_context(_locked(settings.state))
        lease = stack.enter_context(inbox_lease(inbox))
        stack.enter_context(_on_signals(stopping, reloading))
        try:
            require_writable_dir(settings.outbox, "outbox")
        except ConfigError as exc:  # scoring goes on; reports and moves are written once it is fixed
            log.error("%s", exc)
        log_settings(settings, log)
        ledger = Ledger(settings.state)
        stack.callback(ledger.close)
        notices = Notices(settings)
        notices.start()  # what an earlier run left unsent goes out while the model loads
        stack.callback(notices.close)
        hot = HotFolder(settings, ledger, notices.batch_reported, notices.track_record_guess)
        _guarded(hot, hot.recover)
        current = _Current(open_engine(settings))
        stack.callback(current.close)
        _guarded(hot, partial(hot.track_record, current.engine.opened.sha256))  # its warning, before any batch
        latest = LatestRebuilder(settings, current.engine.info)
        latest.start()
        stack.callback(latest.close)  # after intake stops: the last batch is in latest.xlsx before exit
        intake = Intake(inbox, settings.watch, skip=hot.waits, observer_factory=observer_factory)
        stack.callback(intake.stop)
        loop = _Loop(intake, Notifier(), on_status, stopping, reloading, lease, notices)
        stack.callback(loop.notifier.send, "STOPPING=1")
        return _run(loop, hot, current, latest, once)


def _run(loop: _Loop, hot: HotFolder, current: _Current, latest: LatestRebuilder, once: bool) -> Status:
    intake, stopping = loop.intake, loop.stopping
    if stopping.is_set():
        return loop.status
    intake.start(observe=not once)
    loop.report(state="watching")
    loop.notifier.send("READY=1")
    log.info("ready: %s", loop.status.line())
    tick = min(0.2, hot.settings.watch.settle_seconds / 4)
    while not stopping.is_set():
        if loop.reloading.is_set():  # here, between batches: the batch at hand is finished
            _reload(loop, hot, current, latest)
        batch = intake.poll()
        loop.heartbeat()
        if batch:
            loop.report(state=f"scoring {len(batch)} files", waiting=intake.waiting)
            summary = _guarded(hot, partial(hot.process, batch, current.engine, stop=stopping.is_set,
                                            progress=loop.heartbeat))
            if summary is not None:
                latest.changed()
                loop.status = loop.status.counted(summary)
        elif once and intake.idle():
            break
        _guarded(hot, lambda: hot.retry(loop.heartbeat))
        loop.notices.trouble(hot.trouble.cause)
        idle = "inbox missing: waiting for it to come back" if intake.inbox_missing else "watching"
        loop.report(state=idle, waiting=intake.waiting, trouble=hot.trouble.cause, latest_problem=latest.problem)
        if not batch:
            stopping.wait(tick)
    if once:  # no later loop will send what this run queued: give the destinations a moment now
        loop.notices.drain(ONCE_DRAIN_S)
    loop.report(state="stopped")
    return loop.status


# How long `scorer watch --once` waits for its messages to go out before it exits; unsent ones stay queued.
ONCE_DRAIN_S = 30.0

# Changing these needs a restart: the lock, the lease, the watches and the senders are set up for them.
_FIXED_AT_START = ("inbox", "outbox", "state", "watch", "notify")


def _reload(loop: _Loop, hot: HotFolder, current: _Current, latest: LatestRebuilder) -> None:
    """Re-read config.yaml and load its model; the old one serves on if the new one fails in any way."""
    loop.reloading.clear()
    old = current.engine.opened
    log.info("reloading %s and its model", hot.settings.source or "the defaults")
    loop.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
    try:
        fresh = load_settings(hot.settings.source)
        for key in _FIXED_AT_START:
            if getattr(fresh, key) != getattr(hot.settings, key):
                log.warning("'%s' changed in config.yaml: it takes effect at the next restart", key)
        kept = replace(fresh, **{key: getattr(hot.settings, key) for key in _FIXED_AT_START})
        engine = _pinging(loop, partial(open_engine, kept))
    except Exception as exc:  # a model whose load fails with a bug (a TypeError in its unpickling) is refused too
        serving = f"{old.path} (sha256 {old.sha256[:12]})"
        why = str(exc) if isinstance(exc, ScorerError) else f"{type(exc).__name__}: {exc}"
        log.error("reload refused, still serving %s: %s", serving, why)
        if not isinstance(exc, ScorerError):
            log.debug("why the new model did not load", exc_info=exc)
        loop.notices.model_refused(why, serving)
    else:
        current.close()
        current.engine, hot.settings = engine, kept
        latest.use_model(engine.info)
        log.info("reloaded: now serving %s (sha256 %s)", engine.opened.path, engine.opened.sha256)
    loop.notifier.send("READY=1")


def _pinging(loop: _Loop, step: Callable[[], _T]) -> _T:
    """Run a long step (a model load) on a thread while this one keeps the watchdog and the lease fed."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="reload") as pool:
        future = pool.submit(step)
        while True:
            try:
                return future.result(timeout=1.0)
            except StillRunning:
                loop.heartbeat()


def _guarded(hot: HotFolder, step: Callable[[], _T]) -> _T | None:
    # The ledger on a full disk: the batch is not recorded, its files stay in the inbox for the next
    # scan, and the service keeps running instead of crash-looping on the same write.
    try:
        return step()
    except (sqlite3.Error, OSError) as exc:
        hot.trouble.failed("the ledger", exc)
        return None


def _check_layout(settings: Settings) -> None:
    inbox = settings.inbox
    others = {"outbox": settings.outbox, "state": settings.state, "watch.archive": settings.archive_dir,
              "watch.rejected": settings.rejected_dir}
    for key, folder in others.items():
        if folder == inbox or inbox in folder.parents:
            raise ServiceError(f"{key} {folder} is inside the inbox {inbox}: the service would score its own "
                               f"output; move it out, or change '{key}' in config.yaml")


@contextmanager
def _locked(state: Path) -> Iterator[None]:
    path = state / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            raise ServiceError(
                f"another scorer watch (pid {holder}) is using the state folder {state}: stop it first; "
                "two services must not share an inbox") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing drops the lock


@contextmanager
def _on_signals(stopping: threading.Event, reloading: threading.Event) -> Iterator[None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        if not stopping.is_set():
            log.info("%s received: stopping after the current step", signal.Signals(signum).name)
        stopping.set()

    def reload(signum: int, frame: FrameType | None) -> None:
        log.info("SIGHUP received: reloading after the batch at hand")
        reloading.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, reload)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
