"""Sending what the queue holds, in the background: one thread per destination, so a dead one delays no other.

Each thread takes its destination's oldest due message, marks it as being sent, hands it to its courier (a
child process, ended at notify.timeout_seconds), and marks it sent or failed as soon as it knows. A failure is
retried with backoff (2 s doubling to 10 min) until notify.retry_hours have passed since it was queued, then
given up with one log line. A send cut short by a stop is given up, never sent again: at most once. Intake
never waits on any of it: queueing is one SQLite insert, and a queue that cannot be read costs a log line.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from scorer.notify.courier import Courier
from scorer.notify.destinations import Destination
from scorer.notify.queue import Delivery, NotificationQueue, Wakeup
from scorer.settings import NotifySettings

log = logging.getLogger(__name__)

# A sender thread looks at the queue at least this often, so a message queued by another process is seen.
_IDLE_S = 5.0
# How long a sender waits for another writer of the queue; it is in the background, the main loop is not.
_WAIT_S = 2.0


class Sender:
    """The background threads that deliver the queue's messages, one per destination."""

    def __init__(self, state: Path, destinations: Sequence[Destination], notify: NotifySettings) -> None:
        self.state = state
        self.destinations = list(destinations)
        self._retry_s = notify.retry_hours * 3600
        self._stop = threading.Event()
        self._busy: set[str] = set()  # destinations with a send under way: drain() waits for them too
        self._stuck: set[str] = set()  # destinations whose thread cannot use the queue now: drain() does not wait
        self.wakeup = Wakeup()
        self._threads = [threading.Thread(target=self._run, args=(Courier(d, notify.timeout_seconds),),
                                          name=f"notify-{d.number}", daemon=True) for d in self.destinations]

    def start(self) -> None:
        """Start delivering; what an earlier run left unsent goes first."""
        for thread in self._threads:
            thread.start()

    def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds until no destination is owed a message it may be tried for now."""
        deadline = time.monotonic() + timeout
        try:
            queue = NotificationQueue(self.state, _WAIT_S)
        except sqlite3.Error:
            return  # a queue that cannot be read holds nothing to wait for
        try:
            while time.monotonic() < deadline and (self._busy or any(
                    queue.next_due(d.key, time.time()) is not None for d in self.destinations
                    if d.key not in self._stuck)):
                time.sleep(0.1)
        except sqlite3.Error:
            pass
        finally:
            queue.close()

    def close(self) -> None:
        """Stop: a send under way is ended at once (its child killed) and given up; what is unsent stays queued."""
        self._stop.set()
        self.wakeup.ring()
        for thread in self._threads:
            if thread.is_alive():
                thread.join(timeout=_WAIT_S + 1)

    def _run(self, courier: Courier) -> None:
        destination = courier.destination
        queue: NotificationQueue | None = None
        failing, problem, seen = False, "", 0
        try:
            courier.warm(self._stop)  # Apprise loads its plugins now, not during the first batch's intake
            while not self._stop.is_set():
                try:
                    queue = queue or NotificationQueue(self.state, _WAIT_S)
                    delivery = queue.next_due(destination.key, time.time())
                    if delivery is None:
                        due = queue.next_time(destination.key)
                        wait = _IDLE_S if due is None else min(max(due - time.time(), 0.0), _IDLE_S)
                        seen = self.wakeup.wait(seen, wait)
                        continue
                    failing = self._deliver(queue, courier, delivery, failing)
                    problem = ""
                    self._stuck.discard(destination.key)
                except sqlite3.Error as exc:  # locked or damaged: nothing is sent or lost meanwhile
                    if str(exc) != problem:
                        log.warning("notify destination %s cannot use the queue %s (%s): trying again every %g s",
                                    destination.label, self.state / "notify.sqlite", exc, _IDLE_S)
                    problem = str(exc)
                    self._stuck.add(destination.key)
                    self._stop.wait(_IDLE_S)
        finally:
            courier.close()
            if queue is not None:
                queue.close()

    def _deliver(self, queue: NotificationQueue, courier: Courier, delivery: Delivery, failing: bool) -> bool:
        """One try of one message; whether the destination is failing now."""
        label, message = courier.destination.label, delivery.message.id
        self._busy.add(delivery.destination)
        try:
            result = courier.send(delivery.message, self._stop, lambda: queue.sending(delivery))
        finally:
            self._busy.discard(delivery.destination)
        if result is None:  # stopped before it left: it stays queued for the next start
            return failing
        if result.interrupted:
            queue.given_up(delivery)
            log.warning("notification %s was being sent to destination %s when the service stopped: given up, so "
                        "that it is never sent twice (it may have arrived)", message, label)
        elif result.ok:
            queue.sent(delivery)
            if failing:
                log.info("notify destination %s takes messages again", label)
        elif not queue.failed(delivery, self._retry_s, time.time()):
            log.warning("notification %s given up for destination %s after %d tries in %g hours (notify.retry_hours), "
                        "the last: %s; check it with `scorer notify test`", message, label, delivery.attempts + 1,
                        self._retry_s / 3600, result.cause)
        elif not failing:
            log.warning("notify destination %s did not take notification %s: %s; retrying with backoff", label,
                        message, result.cause)
        return not result.ok
