"""The notification outbox: messages queued durably in state/notify.sqlite, each destination's delivery tracked.

A message is written (and fsynced) before anything tries to send it; its id makes queueing it twice
harmless, so a step repeated after a crash queues nothing new. A delivery is marked sent right after
the destination took it, so after a kill -9 each destination gets what it had not yet taken, and
nothing it had taken.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from scorer.sqlitetx import immediate

log = logging.getLogger(__name__)

OUTBOX_NAME = "notify.sqlite"
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
"""


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


class Outbox:
    """state/notify.sqlite: one connection, used by one thread (each sender opens its own)."""

    def __init__(self, state: Path) -> None:
        self.path = state / OUTBOX_NAME
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # queued means on disk: a power cut loses no message
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def enqueue(self, message: Message, destinations: Sequence[str], bound: int) -> bool:
        """Queue a message for each destination, once per id; False if that id was queued before."""
        now = time.time()
        with immediate(self._db):
            self._db.execute("DELETE FROM messages WHERE created < ? AND id NOT IN "
                             "(SELECT message FROM deliveries WHERE state = 'pending')", (now - _KEEP_DONE_S,))
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

    def sent(self, delivery: Delivery) -> None:
        """The destination took it: never send it there again."""
        self._mark(delivery, "sent", delivery.attempts + 1, 0.0)

    def failed(self, delivery: Delivery, retry_s: float, now: float) -> bool:
        """The destination did not take it: schedule the next try, or give up (False) past retry_s."""
        attempts = delivery.attempts + 1
        next_try = now + min(_FIRST_RETRY_S * 2.0 ** (attempts - 1), _LAST_RETRY_S)
        keep = next_try <= delivery.message.created + retry_s
        self._mark(delivery, "pending" if keep else "given up", attempts, next_try)
        return keep

    def _mark(self, delivery: Delivery, state: str, attempts: int, next_try: float) -> None:
        with immediate(self._db):
            self._db.execute("UPDATE deliveries SET state = ?, attempts = ?, next_try = ? "
                             "WHERE message = ? AND destination = ?",
                             (state, attempts, next_try, delivery.message.id, delivery.destination))


class Wakeup:
    """Wakes the senders when a message is queued, instead of each polling the outbox."""

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
