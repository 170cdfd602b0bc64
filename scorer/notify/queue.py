"""The notification queue: messages queued durably in state/notify.sqlite, each destination's delivery tracked.

A message is written (and fsynced) before anything tries to send it; its id makes queueing it twice
harmless, so a step repeated after a crash queues nothing new. A delivery is marked as being sent just
before it leaves, and sent (or failed) as soon as the destination answers. A kill in between leaves it
marked as being sent, and the next start gives it up: a destination never gets a message twice (at most
once), and after a kill -9 it gets everything it had not yet been sent. That start also re-addresses what
waits for a destination whose URL changed, when the change says which new one replaces it, and otherwise
gives it up with a line that says so. A file SQLite cannot read is set aside and started anew.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from scorer.fsutil import free_name
from scorer.notify.destinations import Destination
from scorer.sqlitetx import immediate

log = logging.getLogger(__name__)

QUEUE_NAME = "notify.sqlite"
# Sent and given-up messages are kept this long, so an id queued again after a crash is still known.
_KEEP_DONE_S = 7 * 86400
_FIRST_RETRY_S, _LAST_RETRY_S = 2.0, 600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY, created REAL NOT NULL, title TEXT NOT NULL, body TEXT NOT NULL, attach TEXT);
CREATE TABLE IF NOT EXISTS deliveries (
    message TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE, destination TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL,
    PRIMARY KEY (message, destination));
CREATE INDEX IF NOT EXISTS due ON deliveries (destination, state, next_try);
CREATE TABLE IF NOT EXISTS destinations (key TEXT PRIMARY KEY, scheme TEXT NOT NULL);
"""
# SQLite's word for a file that is not, or no longer, a database it can read.
_DAMAGED = ("SQLITE_NOTADB", "SQLITE_CORRUPT")


@dataclass(frozen=True)
class Message:
    """One notification: its id, title, text and the file to attach where the destination takes files."""

    id: str
    title: str
    body: str
    attach: Path | None = None
    created: float = 0.0


@dataclass(frozen=True)
class Delivery:
    """A message owed to one destination, and how often that destination has failed to take it."""

    message: Message
    destination: str
    attempts: int


def open_queue(state: Path, wait: float) -> NotificationQueue:
    """The notification queue; a file SQLite cannot read as a database is set aside with one log line, and made anew."""
    try:
        return NotificationQueue(state, wait)
    except sqlite3.DatabaseError as exc:
        if getattr(exc, "sqlite_errorname", "") not in _DAMAGED:
            raise
        why = str(exc)
    path = state / QUEUE_NAME
    aside = free_name(path.with_name(f"{QUEUE_NAME}.broken-{datetime.now():%Y%m%d-%H%M%S}"))
    os.replace(path, aside)
    for side in ("-wal", "-shm"):  # the damaged file's journal belongs with it, not with the new one
        if path.with_name(QUEUE_NAME + side).exists():
            os.replace(path.with_name(QUEUE_NAME + side), aside.with_name(aside.name + side))
    log.warning("the notification queue %s is damaged (%s): set aside as %s and started anew; the messages it "
                "held are not sent", path, why, aside.name)
    return NotificationQueue(state, wait)


class NotificationQueue:
    """state/notify.sqlite: one connection, used by one thread (each sender opens its own).

    `wait`: how long a write waits for another writer before it fails (SQLite's busy timeout).
    """

    def __init__(self, state: Path, wait: float) -> None:
        self.path = state / QUEUE_NAME
        self._db = sqlite3.connect(self.path, timeout=wait, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")  # queued means on disk: a power cut loses no message
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error:
            self._db.close()
            raise

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def enqueue(self, message: Message, destinations: Sequence[str], bound: int) -> bool:
        """Queue a message for each destination, once per id; False if that id was queued before."""
        now = time.time()
        with immediate(self._db):
            self._db.execute("DELETE FROM messages WHERE created < ? AND id NOT IN "
                             "(SELECT message FROM deliveries WHERE state IN ('pending', 'sending'))",
                             (now - _KEEP_DONE_S,))
            added = self._db.execute(
                "INSERT OR IGNORE INTO messages (id, created, title, body, attach) VALUES (?, ?, ?, ?, ?)",
                (message.id, now, message.title, message.body, str(message.attach) if message.attach else None),
            ).rowcount
            if not added:
                return False
            self._db.executemany("INSERT INTO deliveries (message, destination, next_try) VALUES (?, ?, ?)",
                                 [(message.id, d, now) for d in destinations])
            dropped = self._db.execute(
                "SELECT id FROM messages WHERE id IN (SELECT message FROM deliveries WHERE state = 'pending') "
                "ORDER BY created DESC, id DESC LIMIT -1 OFFSET ?", (bound,)).fetchall()
            for (old,) in dropped:
                self._db.execute("UPDATE deliveries SET state = 'given up' WHERE message = ?", (old,))
                log.warning("notification %s given up unsent: more than notify.queue (%d) messages are waiting; "
                            "check that the destinations answer (scorer notify test)", old, bound)
        return True

    def next_due(self, destination: str, now: float) -> Delivery | None:
        """The oldest message this destination is owed and may be tried now."""
        row = self._db.execute(
            "SELECT id, title, body, attach, created, attempts FROM deliveries JOIN messages ON id = message "
            "WHERE destination = ? AND state = 'pending' AND next_try <= ? ORDER BY created, id LIMIT 1",
            (destination, now)).fetchone()
        if row is None:
            return None
        message = Message(row[0], row[1], row[2], Path(row[3]) if row[3] else None, row[4])
        return Delivery(message, destination, int(row[5]))

    def next_time(self, destination: str) -> float | None:
        """When this destination's next pending message may be tried, if it has one."""
        (when,) = self._db.execute("SELECT MIN(next_try) FROM deliveries WHERE destination = ? AND state = 'pending'",
                                   (destination,)).fetchone()
        return float(when) if when is not None else None

    def sending(self, delivery: Delivery) -> None:
        """It leaves for the destination now: if nothing is heard of it again, the next start gives it up."""
        self._mark(delivery, "sending", delivery.attempts, 0.0)

    def sent(self, delivery: Delivery) -> None:
        """The destination took it: never send it there again."""
        self._mark(delivery, "sent", delivery.attempts + 1, 0.0)

    def given_up(self, delivery: Delivery) -> None:
        """A stop cut its send short: the destination may have it, so it is not sent again."""
        self._mark(delivery, "given up", delivery.attempts + 1, 0.0)

    def failed(self, delivery: Delivery, retry_s: float, now: float) -> bool:
        """The destination did not take it: schedule the next try, or give up (False) past retry_s."""
        attempts = delivery.attempts + 1
        next_try = now + min(_FIRST_RETRY_S * 2.0 ** (attempts - 1), _LAST_RETRY_S)
        keep = next_try <= delivery.message.created + retry_s
        self._mark(delivery, "pending" if keep else "given up", attempts, next_try)
        return keep

    def settle(self, destinations: Sequence[Destination]) -> None:
        """At start, before any send: give up what a kill cut short, re-address or give up what waits for a changed
        destination, and remember the destinations for the next start."""
        current = {d.key: d for d in destinations}
        with immediate(self._db):
            for message, key in self._db.execute(
                    "SELECT message, destination FROM deliveries WHERE state = 'sending'").fetchall():
                log.warning("notification %s was being sent to destination %s when the service last stopped: given up, "
                            "so that it is never sent twice (it may not have arrived)", message,
                            current[key].label if key in current else "a destination no longer configured")
            self._db.execute("UPDATE deliveries SET state = 'given up' WHERE state = 'sending'")
            self._readdress(current)
            self._db.execute("DELETE FROM destinations")
            self._db.executemany("INSERT INTO destinations (key, scheme) VALUES (?, ?)",
                                 [(d.key, d.scheme) for d in destinations])

    def _readdress(self, current: dict[str, Destination]) -> None:
        """What waits for a destination no longer configured goes to its replacement when one removed and one added
        of the same scheme say which that is (a rotated token); otherwise it is given up, with a line each."""
        known = dict(self._db.execute("SELECT key, scheme FROM destinations").fetchall())
        waiting = dict(self._db.execute("SELECT destination, COUNT(*) FROM deliveries WHERE state = 'pending' "
                                        "GROUP BY destination").fetchall())
        seen = set(known) | {key for (key,) in self._db.execute("SELECT DISTINCT destination FROM deliveries")}
        removed = sorted((set(known) | set(waiting)) - set(current))
        added = [d for key, d in current.items() if key not in seen]
        for old in (key for key in removed if key in waiting):
            count, scheme = waiting[old], known.get(old)
            if len(removed) == 1 and len(added) == 1 and scheme == added[0].scheme:
                self._db.execute("UPDATE deliveries SET destination = ? WHERE destination = ? AND state = 'pending'",
                                 (added[0].key, old))
                log.info("notify destination %s is new and replaces a %s:// destination no longer configured: its %s "
                         "%s there", added[0].label, scheme, _count(count, "waiting notification"),
                         "goes" if count == 1 else "go")
                continue
            self._db.execute("UPDATE deliveries SET state = 'given up' WHERE destination = ? AND state = 'pending'",
                             (old,))
            log.warning("%s waiting for a %sdestination no longer configured %s given up: %s",
                        _count(count, "notification"), f"{scheme}:// " if scheme else "",
                        "was" if count == 1 else "were", _why_not(len(removed), added, scheme))

    def _mark(self, delivery: Delivery, state: str, attempts: int, next_try: float) -> None:
        with immediate(self._db):
            self._db.execute("UPDATE deliveries SET state = ?, attempts = ?, next_try = ? "
                             "WHERE message = ? AND destination = ?",
                             (state, attempts, next_try, delivery.message.id, delivery.destination))


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _why_not(removed: int, added: Sequence[Destination], scheme: str | None) -> str:
    """Why waiting messages could not follow their destination's change."""
    if not added:
        return "no destination was added in its place"
    if removed > 1 or len(added) > 1:
        return (f"{_count(removed, 'destination')} {'was' if removed == 1 else 'were'} removed and {len(added)} "
                "added, so which one replaces it is not known")
    if scheme is None:
        return "the queue does not say what kind it was (it was queued by an earlier version)"
    return f"the one added is a {added[0].scheme}:// destination"


class Wakeup:
    """Wakes the senders when a message is queued, instead of each polling the queue."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    def ring(self) -> None:
        """Something new is queued."""
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Wait until rung after `seen` (or the timeout); return the generation now."""
        with self._condition:
            self._condition.wait_for(lambda: self._generation != seen, timeout)
            return self._generation
