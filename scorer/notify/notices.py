"""What the watch service tells people: a message after each batch report, and one when it is in trouble.

`Notices` queues each message in the notification queue (state/notify.sqlite) and rings the senders; it never
waits for a destination, and waits at most a second for the queue. A queue that cannot be written
costs the message (logged, with the cause) and never stops or slows scoring. With no destinations
configured it does nothing at all.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

from scorer.notify.destinations import load_destinations
from scorer.notify.queue import QUEUE_NAME, Message, NotificationQueue, open_queue
from scorer.notify.sender import Sender
from scorer.results import BatchResult
from scorer.settings import Settings
from scorer.textsafe import log_text
from scorer.track_record import TrackRecord

log = logging.getLogger(__name__)

TOP = 3
# How long queueing waits for another writer of the queue: the main loop's wait, so a locked file costs little.
_QUEUE_WAIT_S = 1.0


class Notices:
    """The service's notifications: queued durably before any send, sent in the background."""

    def __init__(self, settings: Settings) -> None:
        self._notify = settings.notify
        self._state = settings.state
        self._destinations = load_destinations(settings.notify)
        self._keys = [d.key for d in self._destinations]
        self._queue: NotificationQueue | None = None
        self._sender = Sender(settings.state, self._destinations, settings.notify)
        self._trouble_since: float | None = None
        self._trouble_told = False
        if self._destinations:
            log.info("notifying %s", ", ".join(d.label for d in self._destinations))
            self._open()

    def _open(self) -> None:
        """The queue, set aside if damaged, and settled before any send; or a line that says why not."""
        try:
            self._queue = open_queue(self._state, _QUEUE_WAIT_S)
            self._queue.settle(self._destinations)
        except (sqlite3.Error, OSError) as exc:
            log.warning("the notification queue %s cannot be used now (%s): scoring goes on, and each message tries "
                        "it again", self._state / QUEUE_NAME, exc)
            self._close_queue()

    def start(self) -> None:
        """Start the senders; messages left unsent by an earlier run go first."""
        self._sender.start()

    def drain(self, timeout: float) -> None:
        """Give the senders up to `timeout` seconds for what is owed now (a one-shot run is about to exit)."""
        if self._destinations:
            self._sender.drain(timeout)

    def close(self) -> None:
        """Stop the senders; what is unsent stays queued for the next start."""
        self._sender.close()
        self._close_queue()

    def _close_queue(self) -> None:
        if self._queue is not None:
            self._queue.close()
            self._queue = None

    def queue(self, message: Message) -> None:
        """Queue a message for every destination (once per id) and wake the senders; never raises."""
        if not self._destinations:
            return
        try:
            self._queue = self._queue or NotificationQueue(self._state, _QUEUE_WAIT_S)
            if self._queue.enqueue(message, self._keys, self._notify.queue):
                self._sender.wakeup.ring()
        except (sqlite3.Error, OSError) as exc:
            log.warning("notification %s not queued: the queue %s cannot be written (%s); scoring goes on",
                        message.id, self._state / QUEUE_NAME, exc)
            self._close_queue()  # opened again for the next message
        except Exception:  # a bug here costs a message, never the batch or the service
            log.exception("notification %s not queued; scoring goes on", message.id)
            self._close_queue()

    def batch_reported(self, batch: int, report: Path, result: BatchResult) -> None:
        """The message for a batch whose report is on disk: counts, the top three, the report attached."""
        self.queue(batch_message(batch, report, result))

    def trouble(self, cause: str) -> None:
        """Called each loop with the failing write's cause ("" when none): tells once it lasts trouble_minutes."""
        now = time.monotonic()
        if not cause:
            self._trouble_since, self._trouble_told = None, False
            return
        if self._trouble_since is None:
            self._trouble_since = now
        if not self._trouble_told and now - self._trouble_since >= self._notify.trouble_minutes * 60:
            self._trouble_told = True
            self.queue(Message(f"trouble-{time.time_ns()}", "Scorer: the outbox cannot be written",
                               f"For {self._notify.trouble_minutes:g} minutes: {cause}. Scoring goes on and nothing "
                               "is lost; reports and moves are written once this is fixed (free space, close "
                               "the file, or fix the permissions)."))

    def track_record_guess(self, track: TrackRecord) -> None:
        """A model's track record on launched creatives turned to "no better than a guess" (once per model)."""
        model = track.model_sha256
        self.queue(Message(f"guess-{model}", "Scorer: the model is no better than a guess on launched creatives",
                           f"Model {model[:12]}…: {track.verdict}. Every batch report's Model sheet says so too."))

    def model_refused(self, why: str, serving: str) -> None:
        """A reload's new model failed its pin or its load; the old one keeps serving."""
        self.queue(Message(f"model-{time.time_ns()}", "Scorer: the new model was not loaded",
                           f"{why}\nThe model serving now is still {serving}."))


def batch_message(batch: int, report: Path, result: BatchResult) -> Message:
    """Counts, the top three with class and score, and the report's path; the report itself attached."""
    counts = (f"{len(result.scored)} scored, {len(result.rejected)} rejected, "
              f"{len(result.duplicates)} duplicates")
    videos = sum(s.video is not None for s in result.scored)
    lines = [f"Batch {batch}: {counts}" + (f" ({videos} of the scored are videos)." if videos else ".")]
    best = result.ranked()[:TOP]
    if best:
        lines.append(f"Top {len(best)}:")
        lines += [f"{n}. {log_text(s.name)}{f' ({s.media})' if s.video else ''}: {s.predicted}, score {s.score:.0f}"
                  for n, s in enumerate(best, 1)]
    lines.append(f"Report: {report}")
    return Message(f"batch-{batch}-{report.name}", f"Scorer: {counts}", "\n".join(lines), attach=report)
