"""Every Apprise call made in a child process of its own, and ended at notify.timeout_seconds by killing it.

Apprise's own timeout returns but leaves its worker thread waiting on the destination, and a thread that
waits keeps the process from exiting. So Apprise runs only in `python -m scorer.notify.courier` children, one
per destination and kept between sends: the parent waits for each answer until the deadline, or until it is
told to stop, and then kills the child (the next send starts another). The child's log records come back with
its answer; they are logged here at debug level with every secret masked, and a failure's cause is read from them.
"""

from __future__ import annotations

import logging
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection

from scorer.child import Child
from scorer.notify.destinations import SECRETS, Destination
from scorer.notify.queue import Message

# A child loads Apprise's ~190 plugins as it starts; that is no part of a send's deadline.
_START_S = 60.0
_POLL_S = 0.1
_HTTP = re.compile(r"\berror=(\d{3})\b")
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^\"'()\[\]\n]+)")
_TIMED_OUT = re.compile(r"(?i)\b(read|connect) timed out")

LogLine = tuple[str, int, str]  # a child's log record: its logger's name, its level and its message


@dataclass(frozen=True)
class SendResult:
    """What became of a send: taken, or why not; `interrupted` when a stop ended it after it had left."""

    ok: bool
    cause: str = ""
    interrupted: bool = False


class Courier:
    """One destination's child process: started when first needed, killed when a send outlives its deadline."""

    def __init__(self, destination: Destination, timeout: float) -> None:
        self.destination = destination
        self.timeout = timeout
        self._child = Child("scorer.notify.courier", quiet=True)

    def warm(self, stop: threading.Event) -> None:
        """Start the child now (Apprise loads its plugins), so that the first send does not wait for it."""
        self._ready(stop)

    def send(self, message: Message, stop: threading.Event,
             handover: Callable[[], None] = lambda: None) -> SendResult | None:
        """Send `message`, waiting `timeout` s at most; `handover` runs just before it leaves. None: stopped first."""
        conn = self._ready(stop)
        if not isinstance(conn, Connection):
            return None if conn is None else SendResult(False, conn)
        handover()
        attach = str(message.attach) if message.attach is not None and message.attach.is_file() else None
        deadline = time.monotonic() + self.timeout
        try:
            conn.send((message.title, message.body, attach))
            while not conn.poll(_POLL_S):
                if stop.is_set() or time.monotonic() >= deadline:
                    break
            else:
                ok, records = conn.recv()
                _relay(records)
                return SendResult(True) if ok else SendResult(False, _cause(records))
        except (EOFError, OSError):  # the child died (killed with the service, or crashed)
            pass
        self.close()
        if stop.is_set():
            return SendResult(False, "the service stopped mid-send", interrupted=True)
        if time.monotonic() >= deadline:
            return SendResult(False, f"no answer within {self.timeout:g} s (notify.timeout_seconds)")
        return SendResult(False, "its sending process ended before the destination answered")

    def close(self) -> None:
        """Kill the child, whatever it is doing."""
        self._child.kill()

    def _ready(self, stop: threading.Event) -> Connection | str | None:
        """The pipe to a child ready to send; else why not, or None when told to stop while it started."""
        if self._child.alive and self._child.conn is not None:
            return self._child.conn
        try:
            conn = self._child.start()
        except OSError as exc:  # out of processes or memory: this send fails, and is retried
            return f"its sending process cannot start ({exc.strerror or exc})"
        deadline = time.monotonic() + _START_S
        try:
            conn.send((self.destination.url, self.timeout))
            while not conn.poll(_POLL_S):
                if stop.is_set() or time.monotonic() >= deadline:
                    self.close()
                    return None if stop.is_set() else f"its sending process did not start within {_START_S:g} s"
            accepted, records = conn.recv()
        except (EOFError, OSError):
            self.close()
            return "its sending process ended as it started"
        _relay(records)
        if not accepted:
            self.close()
            return "not a URL Apprise understands: fix it in notify.urls or notify.urls_file"
        return conn


def try_destinations(destinations: Sequence[Destination], timeout: float) -> list[tuple[Destination, SendResult]]:
    """Send a test message to every destination at once, each given `timeout` s; what became of each."""
    stop = threading.Event()

    def attempt(destination: Destination) -> SendResult:
        courier = Courier(destination, timeout)
        message = Message(f"test-{time.time_ns()}", "Scorer: test message",
                          f"This is a test from the creative scorer to destination {destination.number}.")
        try:
            return courier.send(message, stop) or SendResult(False, "stopped")
        finally:
            courier.close()

    with ThreadPoolExecutor(max_workers=max(len(destinations), 1), thread_name_prefix="notify-test") as pool:
        try:
            return list(zip(destinations, pool.map(attempt, destinations), strict=True))
        except BaseException:  # Ctrl-C: every child is killed before the pool is left
            stop.set()
            raise


def _cause(records: Sequence[LogLine]) -> str:
    """Why a send failed, in a few words, from what Apprise and urllib3 logged: HTTP 401, connection refused, ..."""
    text = "\n".join(message for _, _, message in records)
    if found := _HTTP.search(text):
        return f"HTTP {found[1]}"
    if found := _ERRNO.search(text):
        why = found[1].strip().rstrip(".")
        return SECRETS.mask(why[:1].lower() + why[1:])
    if found := _TIMED_OUT.search(text):
        return f"{found[1].lower()} timed out"
    warned = [message for _, level, message in records if level >= logging.WARNING]
    return SECRETS.mask(warned[-1]) if warned else "the destination did not take it, and Apprise did not say why"


def _relay(records: Sequence[LogLine]) -> None:
    """The child's log lines, at debug level (the send's own line tells the outcome), every secret masked."""
    for name, _, message in records:
        logger = logging.getLogger(name)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s", SECRETS.mask(message))


class _Capture(logging.Handler):
    """The child's records, kept to go back with its answer."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[LogLine] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()))

    def taken(self) -> list[LogLine]:
        records, self.records = self.records, []
        return records


def _child(conn: Connection) -> None:
    """The child: load Apprise and the destination's URL once, then send what comes until the pipe closes."""
    # A stop signal sent to the whole group (systemd's, Ctrl-C's) is the parent's to act on: it ends this child's
    # send itself, and knows then that the send was cut short.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    capture = _Capture()
    logging.basicConfig(level=logging.DEBUG, handlers=[capture], force=True)
    url, timeout = conn.recv()
    import apprise

    client = apprise.Apprise()
    conn.send((bool(client.add(url)), capture.taken()))
    while True:
        title, body, attach = conn.recv()
        signal.alarm(math.ceil(timeout) + 5)  # even with its parent killed, a send that hangs ends
        try:
            ok = bool(client.notify(title=title, body=body, attach=attach))
        except Exception as exc:  # a plugin's bug is a failed send, not a dead child
            logging.getLogger("apprise").warning("Apprise raised %s: %s", type(exc).__name__, exc)
            ok = False
        signal.alarm(0)
        conn.send((ok, capture.taken()))


if __name__ == "__main__":
    try:
        _child(Connection(int(sys.argv[1])))
    except (EOFError, OSError):  # the parent closed the pipe, or is gone (killed while this one was sending)
        pass
