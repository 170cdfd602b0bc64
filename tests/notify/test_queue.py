"""The queue in state/notify.sqlite: locked by another process, and its messages when a destination's URL changes.

Real Apprise to real receivers on 127.0.0.1; the queue is a real SQLite file, locked by a real second connection.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path

import pytest

from scorer.notify.notices import Notices
from scorer.notify.queue import QUEUE_NAME, Message, NotificationQueue
from scorer.settings import Settings
from tests.support.helpers import hot_settings
from tests.support.receivers import JsonReceiver, free_port, json_url, notify_section, wait_for


def settings_for(root: Path, urls: list[str], **notify: object) -> Settings:
    return hot_settings(root, notify_section(root, urls, **notify))


def pending(settings: Settings) -> int:
    with sqlite3.connect(settings.state / QUEUE_NAME) as db:
        return int(db.execute("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'").fetchone()[0])


def tried(settings: Settings, message: Message, caplog: pytest.LogCaptureFixture, count: int = 1) -> None:
    """Queue `message`, wait until each of `count` destinations failed to take it once, and stop."""
    notices = Notices(settings)
    notices.start()
    try:
        notices.queue(message)
        wait_for(lambda: caplog.text.count(f"did not take notification {message.id}") == count, "the failed tries")
    finally:
        notices.close()


def test_a_locked_queue_costs_a_log_line_per_message_not_a_stall(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_for(tmp_path, [json_url(free_port())], trouble_minutes=0.01)
    NotificationQueue(settings.state, 1.0).close()
    holder = sqlite3.connect(settings.state / QUEUE_NAME, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another process writes, and does not let go
    caplog.set_level(logging.INFO)
    notices = Notices(settings)
    try:
        began = time.monotonic()
        notices.queue(Message("m-1", "title", "body"))
        for _ in range(2):  # the service tells of a failing write each loop; past trouble_minutes it is queued
            notices.trouble("cannot write report r.xlsx: No space left on device")
            time.sleep(0.7)
        took = time.monotonic() - began - 1.4
        assert took < 3, f"queueing waited {took:.1f} s on the lock"
        holder.rollback()
        notices.queue(Message("m-2", "title", "body"))
    finally:
        holder.close()
        notices.close()
    not_queued = [r.getMessage() for r in caplog.records if "not queued" in r.getMessage()]
    assert len(not_queued) == 2 and "notification m-1 not queued" in not_queued[0], not_queued
    assert "database is locked" in not_queued[1] and "trouble-" in not_queued[1]
    assert pending(settings) == 1, "once the lock is gone, the next message is queued"


def test_messages_waiting_for_a_rotated_url_go_to_the_corrected_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    old = json_url(free_port()).replace("/hook/", "/hook/old-")  # nothing answers there: the token was revoked
    tried(settings_for(tmp_path, [old]), Message("m-1", "title", "body"), caplog)
    receiver = JsonReceiver()
    settings = settings_for(tmp_path, [receiver.url])  # the same service, with its new token
    notices = Notices(settings)
    notices.start()
    try:
        wait_for(lambda: len(receiver.bodies) == 1, "the waiting message, at the corrected URL")
    finally:
        notices.close()
        receiver.close()
    assert receiver.bodies[0]["message"] == "body"
    (line,) = [r.getMessage() for r in caplog.records if "waiting" in r.getMessage()]
    assert line == ("notify destination 1 (json://***) is new and replaces a json:// destination no longer "
                    "configured: its 1 waiting notification goes there")


def test_messages_for_destinations_that_changed_ambiguously_are_given_up_with_a_line_each(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    dead = [json_url(free_port()), json_url(free_port())]
    tried(settings_for(tmp_path, dead), Message("m-1", "title", "body"), caplog, count=2)
    receivers = [JsonReceiver(), JsonReceiver()]
    notices = Notices(settings_for(tmp_path, [r.url for r in receivers]))  # both changed: which is which?
    notices.start()
    try:
        time.sleep(1)
    finally:
        notices.close()
        for receiver in receivers:
            receiver.close()
    assert [r.bodies for r in receivers] == [[], []]
    lines = [r.getMessage() for r in caplog.records if "no longer configured" in r.getMessage()]
    assert lines == ["1 notification waiting for a json:// destination no longer configured was given up: 2 "
                     "destinations were removed and 2 added, so which one replaces it is not known"] * 2
    assert pending(settings_for(tmp_path, [r.url for r in receivers])) == 0
