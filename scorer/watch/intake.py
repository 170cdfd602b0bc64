"""Intake: watchdog events and rescans become settled, ordered batches. The only watchdog import.

watchdog runs handlers on its dispatcher thread, where a slow handler blocks every
event and an exception kills the thread, so the handler here only queues paths.
Everything else happens on the caller's thread in `Intake.poll`, which the service
calls between batches; events keep queuing while a batch is scored.
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from watchdog.events import (
    EVENT_TYPE_CLOSED,
    EVENT_TYPE_CREATED,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from scorer.context.plan import is_plan_name
from scorer.decoding.vet import find_candidates, is_ignored_name
from scorer.errors import ServiceError
from scorer.settings import WatchSettings

log = logging.getLogger(__name__)

ObserverFactory = Callable[[bool, float], BaseObserver]
Skip = Callable[[Path, os.stat_result], bool]

_WANTED = {EVENT_TYPE_CREATED, EVENT_TYPE_MODIFIED, EVENT_TYPE_MOVED, EVENT_TYPE_CLOSED}


def _taken_in(name: str) -> bool:
    # Sidecars come in too: each leaves with its creative, or as an orphan in time (HotFolder.waits
    # holds them until then). A plan.csv stays for the creatives to come.
    return not is_plan_name(name)


def make_observer(polling: bool, interval: float) -> BaseObserver:
    """watchdog's polling observer, or the platform's native one (inotify on Linux)."""
    return PollingObserver(timeout=interval) if polling else Observer()


class _Enqueue(FileSystemEventHandler):
    """Puts each event's path on a queue and does nothing else."""

    def __init__(self, paths: queue.SimpleQueue[str]) -> None:
        self._paths = paths

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _WANTED:
            return
        if event.is_directory and event.event_type == EVENT_TYPE_MODIFIED:
            return  # fires for every change inside a folder; those files have events of their own
        # A rename inside the tree arrives as a move: the new name is the one to score.
        path = event.dest_path if event.event_type == EVENT_TYPE_MOVED else event.src_path
        if path:
            self._paths.put(os.fsdecode(path))


@dataclass
class _Settling:
    key: tuple[int, int]
    since: float


class Intake:
    """Files in the inbox, from events and rescans, released in batches once they stop changing."""

    def __init__(self, inbox: Path, settings: WatchSettings, *, skip: Skip = lambda path, st: False,
                 observer_factory: ObserverFactory = make_observer, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.inbox = inbox
        self.settings = settings
        self.polling = settings.polling
        self._skip = skip
        self._factory = observer_factory
        self._clock = clock
        self._events: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._observer: BaseObserver | None = None
        self._inbox_id: tuple[int, int] | None = None
        self._observe = False
        self._settling: dict[Path, _Settling] = {}
        self._ready: dict[Path, tuple[int, int]] = {}
        self._first_ready = self._last_ready = 0.0
        self._next_rescan = 0.0
        self.inbox_missing = False

    def start(self, *, observe: bool = True) -> None:
        """Scan the inbox and, unless only that scan is wanted (--once), start watching it."""
        self._observe = observe
        if observe:
            try:
                self._start_observer()
            except OSError as exc:
                raise ServiceError(f"cannot watch the inbox {self.inbox} ({exc.strerror or exc}): check that the "
                                   "service can read it, or set 'watch.polling: true'") from None
        self._scan()

    def stop(self) -> None:
        """Stop watching."""
        self._stop_observer()

    @property
    def alive(self) -> bool:
        """Whether events are flowing: the observer and its emitter threads run, on the same inbox folder."""
        if not self._observe:
            return True
        obs = self._observer
        if obs is None or not obs.is_alive() or not obs.emitters:
            return False
        if not all(emitter.is_alive() for emitter in obs.emitters):
            return False  # watchdog stops an emitter for good when its folder is deleted or unmounted
        return self._identity() == self._inbox_id  # a folder replaced under the same name is not watched

    @property
    def waiting(self) -> int:
        """Files seen but not yet released in a batch."""
        return len(self._settling) + len(self._ready)

    def idle(self) -> bool:
        """Whether nothing is settling or waiting to be batched."""
        return not self._settling and not self._ready

    def poll(self) -> list[Path] | None:
        """Take in events, restart a dead observer, rescan when due, and return a batch if one has closed."""
        now = self._clock()
        while True:
            try:
                path = self._events.get_nowait()
            except queue.Empty:
                break
            self._track(Path(path), now)
        if self._observe and not self.alive:
            self._restart(now)
        if self._observe and now >= self._next_rescan:
            self._scan()
        self._settle(now)
        return self._close(now)

    def _start_observer(self) -> None:
        try:
            self._observer = self._schedule(self.polling)
        except OSError as exc:
            if self.polling or exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            log.error(
                "inotify limit reached (%s): polling %s every %.1f s instead. To get events again, raise "
                "fs.inotify.max_user_watches (ENOSPC) or fs.inotify.max_user_instances (EMFILE), e.g. "
                "`sysctl fs.inotify.max_user_watches=524288`, and restart", exc.strerror or exc, self.inbox,
                self.settings.poll_interval)
            self.polling = True
            self._observer = self._schedule(True)
        self._inbox_id = self._identity()
        log.info("watching %s (%s)", self.inbox, "polling" if self.polling else "events")

    def _schedule(self, polling: bool) -> BaseObserver:
        observer = self._factory(polling, self.settings.poll_interval)
        observer.schedule(_Enqueue(self._events), str(self.inbox), recursive=True)
        try:
            observer.start()
        except BaseException:
            observer.stop()
            raise
        return observer

    def _stop_observer(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            if self._observer.is_alive():
                self._observer.join(timeout=2)
            self._observer = None

    def _restart(self, now: float) -> None:
        self._stop_observer()
        if not self.inbox.is_dir():
            if not self.inbox_missing:
                log.warning("inbox %s is gone (share unmounted?): waiting for it to come back", self.inbox)
            self.inbox_missing = True
            return
        try:
            self._start_observer()
        except OSError as exc:
            log.warning("cannot watch %s yet (%s): trying again", self.inbox, exc.strerror or exc)
            return
        if self.inbox_missing:
            log.info("inbox %s is back", self.inbox)
        else:
            log.warning("the watcher of %s had stopped: restarted it", self.inbox)
        self.inbox_missing = False
        self._scan()  # events while nobody watched are lost

    def _identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.inbox)
        except OSError:
            return None
        return (st.st_dev, st.st_ino)

    def _scan(self) -> None:
        self._next_rescan = self._clock() + self.settings.rescan_seconds
        if not self.inbox.is_dir():
            return
        now = self._clock()
        for path in find_candidates([self.inbox], _taken_in):
            self._track(path, now)

    def _ignored(self, path: Path) -> bool:
        try:
            parts = path.relative_to(self.inbox).parts
        except ValueError:
            return True  # a move out of the inbox reports a destination elsewhere
        return not parts or any(is_ignored_name(part) for part in parts) or not _taken_in(parts[-1])

    def _track(self, path: Path, now: float) -> None:
        if path in self._ready or self._ignored(path):
            return
        try:
            st = os.lstat(path)
        except OSError:
            return
        if stat.S_ISDIR(st.st_mode):
            # A folder moved in may bring files whose own events never came.
            for found in find_candidates([path], _taken_in):
                self._track(found, now)
            return
        key = (st.st_size, st.st_mtime_ns)
        entry = self._settling.get(path)
        if entry is None:
            if self._skip(path, st):
                return
            self._settling[path] = _Settling(key, now)

    def _settle(self, now: float) -> None:
        settle = self.settings.settle_seconds
        for path, entry in list(self._settling.items()):
            try:
                st = os.lstat(path)
            except OSError:
                del self._settling[path]  # gone (or renamed: the new name has its own event)
                continue
            key = (st.st_size, st.st_mtime_ns)
            if key != entry.key:
                entry.key, entry.since = key, now
                continue
            # The full quiet spell even after a close-write: SMB and sync clients close and reopen
            # a file between chunks. Links, pipes and devices never settle; they are released at
            # once and rejected without being opened.
            if now - entry.since >= settle or not stat.S_ISREG(st.st_mode):
                del self._settling[path]
                if not self._ready:
                    self._first_ready = now
                self._ready[path] = key
                self._last_ready = now

    def _close(self, now: float) -> list[Path] | None:
        if not self._ready:
            return None
        w = self.settings
        full = len(self._ready) >= w.max_batch
        quiet = now - self._last_ready >= w.settle_seconds
        old = now - self._first_ready >= w.max_batch_age
        # --once stops at what is there now: once nothing is settling, nothing more can join.
        finished = not self._observe and not self._settling
        if not (full or quiet or old or finished):
            return None
        ordered = sorted(self._ready, key=lambda p: (self._ready[p][1], str(p)))[: w.max_batch]
        released = []
        for path in ordered:
            key = self._ready.pop(path)
            # Checked again on release: a file written to after it settled waits for a new quiet spell.
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if (st.st_size, st.st_mtime_ns) != key:
                self._settling[path] = _Settling((st.st_size, st.st_mtime_ns), now)
            else:
                released.append(path)
        self._first_ready = now
        return released or None

