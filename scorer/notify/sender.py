"""Sending what the outbox holds, in the background: one thread per destination, so a dead one delays no other.

Each thread takes its destination's oldest due message, hands it to Apprise, and marks it sent at
once; a failure is retried with backoff (2 s doubling to 10 min) until notify.retry_hours have
passed since it was queued, then given up with one log line. Intake never waits on any of it:
queueing is one SQLite insert.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from scorer.notify.destinations import Destination
from scorer.notify.outbox import Message, Outbox, Wakeup

log = logging.getLogger(__name__)

# A sender thread looks at the outbox at least this often, so a message queued by another process is seen.
_IDLE_S = 5.0

Send = Callable[[Destination, Message], bool]


def apprise_send(destination: Destination, message: Message) -> bool:
    """Send one message to one destination with Apprise; the attachment goes where the service takes files."""
    import apprise

    client = apprise.Apprise()
    if not client.add(destination.url):
        log.error("notify destination %s is not a URL Apprise understands: fix it in notify.urls or "
                  "notify.urls_file", destination.label)
        return False
    attach = message.attach if message.attach is not None and message.attach.is_file() else None
    return bool(client.notify(title=message.title, body=message.body, attach=str(attach) if attach else None))


class Sender:
    """The background threads that deliver the outbox's messages, one per destination."""

    def __init__(self, state: Path, destinations: Sequence[Destination], retry_hours: float,
                 send: Send = apprise_send) -> None:
        self.state = state
        self.destinations = list(destinations)
        self._retry_s = retry_hours * 3600
        self._send = send
        self._stop = threading.Event()
        self.wakeup = Wakeup()
        self._threads = [threading.Thread(target=self._run, args=(d,), name=f"notify-{d.number}", daemon=True)
                         for d in self.destinations]

    def start(self) -> None:
        """Start delivering; what an earlier run left unsent goes first."""
        if self.destinations and self._send is apprise_send:
            # Apprise finds its ~190 plugins on first use: here, at start-up, not during the first batch's intake.
            import apprise

            apprise.Apprise().add(self.destinations[0].url)
        for thread in self._threads:
            thread.start()

    def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds until no destination is owed a message it may be tried for now."""
        outbox = Outbox(self.state)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and any(
                    outbox.next_due(d.key, time.time()) is not None for d in self.destinations):
                time.sleep(0.1)
        finally:
            outbox.close()

    def close(self) -> None:
        """Stop after the sends in flight (a daemon thread stuck on a dead server is left to exit with us)."""
        self._stop.set()
        self.wakeup.ring()
        for thread in self._threads:
            thread.join(timeout=1.0)

    def _run(self, destination: Destination) -> None:
        outbox = Outbox(self.state)
        failing = False
        seen = 0
        try:
            while not self._stop.is_set():
                delivery = outbox.next_due(destination.key, time.time())
                if delivery is None:
                    due = outbox.next_time(destination.key)
                    wait = _IDLE_S if due is None else min(max(due - time.time(), 0.0), _IDLE_S)
                    seen = self.wakeup.wait(seen, wait)
                    continue
                ok = _attempt(self._send, destination, delivery.message)
                if ok:
                    outbox.sent(delivery)
                    if failing:
                        log.info("notify destination %s takes messages again", destination.label)
                elif not outbox.failed(delivery, self._retry_s, time.time()):
                    log.warning("notification %s given up for destination %s after %d tries in %g hours "
                                "(notify.retry_hours): check it with `scorer notify test`", delivery.message.id,
                                destination.label, delivery.attempts + 1, self._retry_s / 3600)
                elif not failing:
                    log.warning("notify destination %s did not take notification %s: retrying with backoff",
                                destination.label, delivery.message.id)
                failing = not ok
        finally:
            outbox.close()


def try_destinations(destinations: Sequence[Destination], send: Send = apprise_send) -> list[tuple[str, bool]]:
    """Send one test message to each destination, now and unqueued; each one's label and whether it took it."""
    results = []
    for destination in destinations:
        message = Message(f"test-{time.time_ns()}", "Scorer: test message",
                          f"This is a test from the creative scorer to destination {destination.number}.")
        results.append((destination.label, _attempt(send, destination, message)))
    return results


def _attempt(send: Send, destination: Destination, message: Message) -> bool:
    try:
        return send(destination, message)
    except Exception as exc:  # a plugin's bug is a failed send, not a crash of the service or the command
        log.warning("notify destination %s raised %s", destination.label, type(exc).__name__)
        return False
