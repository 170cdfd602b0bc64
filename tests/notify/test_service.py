"""Notification trouble never stops, slows or loses scoring: a real `scorer watch` with real json:// destinations.

A destination that never finishes answering, one that answers slowly, a queue file that is damaged or
locked by another process: the files are scored and moved all the same, and the service stops on time.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time

import pytest

from scorer.config import load_settings
from scorer.notify.destinations import Destination
from scorer.notify.queue import QUEUE_NAME, Message, NotificationQueue
from tests.support.helpers import Project, Service, configure, inbox_files, reports, start
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.receivers import JsonReceiver, TrickleReceiver, notify_section, wait_for

COLOURS = list(CLASS_COLOURS.values())


def notifying(project: Project, urls: list[str], **notify: object) -> None:
    """The test service's config, notifying `urls`."""
    configure(project)
    with open(project.config, "a") as config:
        config.write(notify_section(project.root, urls, **notify))


def drop(project: Project, count: int) -> None:
    for n in range(count):
        write_creative(project.inbox / f"c{n}.jpg", COLOURS[n % 3], (48, 40), seed=n)


@pytest.mark.slow
def test_watch_once_exits_within_seconds_of_its_last_file_while_a_destination_trickles(
        watched: Project, services: list[Service]) -> None:
    trickle = TrickleReceiver()
    notifying(watched, [trickle.url], timeout_seconds=2)
    drop(watched, 2)
    try:
        service = start(watched, services, "--once")
        began = time.monotonic()
        try:
            service.proc.wait(40)
        except Exception:
            pytest.fail(f"scorer watch --once still runs 40 s after it started:\n{service.log}")
        ended = time.monotonic()
    finally:
        trickle.close()
    last = max(when for when, line in service.lines if "scored, " in line)
    assert service.proc.returncode == 0, service.log
    assert ended - last < 10, f"exited {ended - last:.1f} s after its last batch (began {last - began:.1f} s in)"
    assert inbox_files(watched) == [] and len(reports(watched)) == 1
    assert trickle.hits >= 1
    service.wait_log(r"notify destination 1 \(json://\*\*\*\) did not take notification batch-1-.*: "
                     r"no answer within 2 s \(notify.timeout_seconds\)")


@pytest.mark.slow
def test_sigterm_during_a_send_that_never_ends_stops_the_service_within_seconds(
        watched: Project, services: list[Service]) -> None:
    trickle = TrickleReceiver()
    notifying(watched, [trickle.url], timeout_seconds=120)
    try:
        service = start(watched, services)
        service.wait_log("ready:")
        drop(watched, 1)
        wait_for(lambda: trickle.hits == 1, "the batch's message being sent", timeout=60)
        code, took = service.signal(signal.SIGTERM, timeout=30)
    finally:
        trickle.close()
    assert code == 0, service.log
    assert took < 5, f"stopped {took:.1f} s after SIGTERM:\n{service.log}"
    service.wait_log(r"notification batch-1-.* was being sent to destination 1 \(json://\*\*\*\) when the service "
                     r"stopped: given up")


@pytest.mark.slow
def test_a_kill_during_a_slow_send_never_sends_the_message_twice(
        watched: Project, services: list[Service]) -> None:
    slow = JsonReceiver(delay=2.5)
    notifying(watched, [slow.url])
    try:
        first = start(watched, services)
        first.wait_log("ready:")
        drop(watched, 1)
        wait_for(lambda: slow.hits == 1, "the batch's message on its way", timeout=60)
        first.proc.kill()  # while the destination is still answering
        first.proc.wait(10)
        wait_for(lambda: len(slow.bodies) == 1, "the destination took it (its answer went nowhere)")
        second = start(watched, services)
        second.wait_log("ready:")
        time.sleep(4)  # a second copy would be sent at once
        assert slow.hits == 1, f"sent {slow.hits} times:\n{second.log}"
        assert second.signal(signal.SIGTERM)[0] == 0
    finally:
        slow.close()
    line = second.lines[second.wait_log(r"notification batch-1-.* was being sent to destination 1 .* when the "
                                        r"service last stopped")][1]
    assert "never sent twice" in line and "may not have arrived" in line


def test_a_damaged_queue_file_is_set_aside_with_one_line_and_scoring_goes_on(
        watched: Project, services: list[Service]) -> None:
    receiver = JsonReceiver()
    notifying(watched, [receiver.url])
    state = watched.root / "state"
    garbage = os.urandom(8192)
    (state / QUEUE_NAME).write_bytes(garbage)
    drop(watched, 2)
    try:
        service = start(watched, services, "--once")
        service.proc.wait(90)
    finally:
        receiver.close()
    assert service.proc.returncode == 0 and "Traceback" not in service.log, service.log
    assert inbox_files(watched) == [] and len(reports(watched)) == 1
    (aside,) = state.glob(f"{QUEUE_NAME}.broken-*[0-9]")  # not its -wal, -shm
    assert aside.read_bytes() == garbage, "the damaged file is kept as it was, for a look"
    told = [line for _, line in service.lines if "notify.sqlite" in line and "set aside" in line]
    assert len(told) == 1 and aside.name in told[0], told
    assert len(receiver.bodies) == 1, "the batch's message goes through the new queue"


def test_a_queue_file_locked_by_another_process_does_not_stall_intake(
        watched: Project, services: list[Service]) -> None:
    receiver = JsonReceiver()
    notifying(watched, [receiver.url])
    # the queue, as an earlier run left it: one message
    earlier = NotificationQueue(load_settings(watched.config).state, 1.0)
    earlier.enqueue(Message("earlier", "title", "body"), [Destination(1, receiver.url).key], 10)  # waits, due now
    earlier.close()
    holder = sqlite3.connect(watched.root / "state" / QUEUE_NAME, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock for the whole run
    for n in range(3):
        write_creative(watched.inbox / f"c{n}.jpg", COLOURS[n % 3], (48, 40), seed=n)
    try:
        service = start(watched, services, "--once")
        try:
            service.proc.wait(60)
        except Exception:
            pytest.fail(f"scorer watch --once stalled on the locked queue:\n{service.log}")
        ended = time.monotonic()
    finally:
        holder.close()
        receiver.close()
    assert service.proc.returncode == 0, service.log
    assert inbox_files(watched) == [] and len(reports(watched)) == 1
    last = max(when for when, line in service.lines if "scored, " in line)
    assert ended - last < 10, f"exited {ended - last:.1f} s after its last batch: it waited for sends that cannot start"
    assert receiver.bodies == [], "nothing can be marked as being sent, so nothing is sent"
    assert "the ledger" not in service.log, "the log blames the queue, not the ledger"
    (line,) = [line for _, line in service.lines if "not queued" in line]
    assert "notification batch-1-" in line and "database is locked" in line and "scoring goes on" in line
