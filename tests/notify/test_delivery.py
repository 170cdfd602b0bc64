"""Notifications: real Apprise against a real SMTP server and a real HTTP receiver on 127.0.0.1.

The model is not under test here, so the fake colour model (tests/support/fakes.py) scores the batches;
the service-level tests (kill -9, reload) run `scorer watch` as a subprocess with the tiny learner.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import signal
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from scorer import fsutil
from scorer.cli import main
from scorer.errors import ConfigError
from scorer.ledger.store import Ledger
from scorer.notify.destinations import load_destinations
from scorer.notify.notices import Notices
from scorer.scoring.engine import Engine
from scorer.settings import Settings
from scorer.watch.batch import HotFolder
from tests.support.helpers import (
    Project,
    Service,
    configure,
    drop,
    files_in_inbox,
    hot_settings,
    reports,
    start,
    wait_until_empty,
)
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.receivers import (
    SECRETS,
    JsonReceiver,
    SmtpReceiver,
    free_port,
    json_url,
    notify_section,
    smtp_url,
    wait_for,
)
from tests.support.workbooks import column

# `scorer watch` subprocesses with the tiny learner, its ONNX export made once, as test_watch_service runs them


@pytest.fixture
def receivers() -> Iterator[tuple[JsonReceiver, SmtpReceiver]]:
    json_receiver, smtp = JsonReceiver(), SmtpReceiver()
    yield json_receiver, smtp
    json_receiver.close()
    smtp.close()


def settings_for(tmp_path: Path, urls: list[str], **notify: object) -> Settings:
    return hot_settings(tmp_path, notify_section(tmp_path, urls, **notify))


def run_batch(settings: Settings, notices: Notices, engine: Engine, names: list[str]) -> Path:
    drop(settings, names)
    hot = HotFolder(settings, Ledger(settings.state), notices.batch_reported)
    summary = hot.process(files_in_inbox(settings), engine, stop=lambda: False)
    hot.ledger.close()
    assert summary is not None
    return summary.report


def test_a_batch_mails_its_report_and_posts_counts_and_top_three(
        tmp_path: Path, engine: Engine, receivers: tuple[JsonReceiver, SmtpReceiver],
        caplog: pytest.LogCaptureFixture) -> None:
    json_receiver, smtp = receivers
    settings = settings_for(tmp_path, [json_receiver.url, smtp.url])
    caplog.set_level(logging.DEBUG)  # Apprise and urllib3 log URLs at debug level: their secrets must be masked
    notices = Notices(settings)
    notices.start()
    try:
        (settings.inbox / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
        report = run_batch(settings, notices, engine, ["red.jpg", "green.jpg", "blue.jpg", "red2.jpg", "green2.jpg"])
        wait_for(lambda: len(smtp.mails) == 1 and len(json_receiver.bodies) == 1, "one mail and one JSON post")
    finally:
        notices.close()
    (mail,) = smtp.mails
    (attachment,) = [part for part in mail.walk() if part.get_filename()]
    data = attachment.get_payload(decode=True)
    assert attachment.get_filename() == report.name and data == report.read_bytes(), "the report, byte for byte"
    assert load_workbook(io.BytesIO(data), read_only=True).sheetnames[:3] == ["Ranking", "Rejected", "Duplicates"]
    ranking = [str(name) for name in column(report, "Ranking")]
    (body,) = json_receiver.bodies
    text = body["message"]
    assert "5 scored, 1 rejected, 0 duplicates" in text and f"Report: {report}" in text
    top = [line for line in text.splitlines() if line[:2] in ("1.", "2.", "3.")]
    assert [line.split(" ", 1)[1].split(":")[0] for line in top] == ranking[:3], "the top three, best first"
    assert all(", score " in line and line.split(": ")[1].split(",")[0] in ("High", "Neutral", "Low")
               for line in top)
    assert [a["filename"] for a in body.get("attachments", [])] in ([], [report.name])
    masked = [r.getMessage() for r in caplog.records if r.name == "apprise" and "***" in r.getMessage()]
    assert masked, "Apprise logged the URLs it loaded (this test looks at them), with their secrets masked"
    assert_no_secrets(caplog.text, "the log")
    assert_no_secrets(str(body) + str(mail), "the messages")
    assert_no_secrets(_xlsx_text(report), "the report")


def assert_no_secrets(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a secret ({secret[:3]}…) appears in {where}"


def _xlsx_text(path: Path) -> str:
    with zipfile.ZipFile(path) as book:
        return "".join(book.read(name).decode("utf-8", "replace") for name in book.namelist())


def test_a_failing_destination_is_retried_then_given_up_while_the_other_gets_every_message(
        tmp_path: Path, engine: Engine, caplog: pytest.LogCaptureFixture) -> None:
    dead, alive = JsonReceiver(status=500), JsonReceiver()
    settings = settings_for(tmp_path, [dead.url, alive.url], retry_hours=0.0015)  # 5.4 s: tries at 0, 2 s
    caplog.set_level(logging.INFO)
    notices = Notices(settings)
    notices.start()
    try:
        reports = [run_batch(settings, notices, engine, [f"a{n}.jpg", f"b{n}.jpg"]) for n in range(3)]
        wait_for(lambda: len(alive.bodies) == 3, "the live destination got all three")
        wait_for(lambda: caplog.text.count("given up for destination 1") == 3, "three give-ups", timeout=20)
    finally:
        notices.close()
        dead.close()
        alive.close()
    assert [b["message"].rsplit("Report: ", 1)[1] for b in alive.bodies] == [str(r) for r in reports]
    assert dead.hits == 6, "each message tried twice (at once and after 2 s), then given up"
    for report in reports:
        given_up = [r.getMessage() for r in caplog.records if "given up" in r.getMessage() and report.name in
                    r.getMessage()]
        assert len(given_up) == 1, f"one log line per message given up: {given_up}"
        assert "the last: HTTP 500" in given_up[0], "the line gives the cause"
    (failing,) = [r.getMessage() for r in caplog.records if "did not take" in r.getMessage()]
    assert failing.endswith(": HTTP 500; retrying with backoff"), "the first failure is told once, with its cause"


def test_urls_file_must_not_be_world_readable(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, ["json://127.0.0.1:9/hook"])
    assert settings.notify.urls_file is not None
    os.chmod(settings.notify.urls_file, 0o644)
    with pytest.raises(ConfigError, match="readable by everyone.*chmod o-r"):
        load_destinations(settings.notify)
    os.chmod(settings.notify.urls_file, 0o600)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "notify-urls").write_text("json://127.0.0.1:9/from-credential\n")
    os.chmod(credentials / "notify-urls", 0o400)  # as systemd hands it over
    (found,) = load_destinations(settings.notify, {"CREDENTIALS_DIRECTORY": str(credentials)})
    assert found.url.endswith("/from-credential"), "systemd's credential wins over the file it was loaded from"
    assert found.label == "1 (json://***)"


def test_notify_test_says_per_destination_whether_it_worked(
        tmp_path: Path, receivers: tuple[JsonReceiver, SmtpReceiver]) -> None:
    json_receiver, smtp = receivers
    dead = JsonReceiver(status=500)
    settings_for(tmp_path, [json_receiver.url, dead.url, smtp.url])
    result = CliRunner().invoke(main, ["notify", "test", "--config", str(tmp_path / "config.yaml")])
    dead.close()
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == ["destination 1 (json://***): ok",
                                          "destination 2 (json://***): failed: HTTP 500",
                                          "destination 3 (mailto://***): ok"]
    assert len(json_receiver.bodies) == 1 and len(smtp.mails) == 1
    assert "test" in json_receiver.bodies[0]["message"]


@pytest.mark.slow
def test_kill_9_after_the_report_then_restart_delivers_once_per_destination(
        watched: Project, services: list[Service]) -> None:
    json_port, smtp_port = free_port(), free_port()  # nothing listens yet: no send can succeed before the kill
    configure(watched)
    urls = watched.root / "notify-urls"
    urls.write_text(f"{json_url(json_port)}\n{smtp_url(smtp_port)}\n")
    os.chmod(urls, 0o600)
    with open(watched.config, "a") as config:
        config.write(f"notify:\n  urls_file: {urls}\n")
    for n, colour in enumerate(CLASS_COLOURS.values()):
        write_creative(watched.inbox / f"c{n}.jpg", colour, (48, 40), seed=n)
    first = start(watched, services)
    first.wait_log(r"batch 1: 3 scored")
    for n in (1, 2):  # each tried once and failed: the kill cuts no send short (that one is given up, not resent)
        first.wait_log(rf"notify destination {n} .* did not take notification batch-1-.*: connection refused")
    first.proc.kill()
    first.proc.wait(10)
    (report,) = reports(watched)
    assert "given up" not in first.log
    json_receiver, smtp = JsonReceiver(json_port), SmtpReceiver(smtp_port)
    try:
        second = start(watched, services)
        wait_for(lambda: len(json_receiver.bodies) == 1 and len(smtp.mails) == 1, "the queued message, after restart",
                 timeout=90)
        second.wait_log("ready:")
        time.sleep(3)  # a second copy would be sent at once: none comes
        assert (len(json_receiver.bodies), len(smtp.mails)) == (1, 1), "exactly once per destination"
        assert json_receiver.bodies[0]["message"].endswith(f"Report: {report}")
        (attachment,) = [part for part in smtp.mails[0].walk() if part.get_filename()]
        assert attachment.get_payload(decode=True) == report.read_bytes()
        assert second.signal(signal.SIGTERM)[0] == 0
    finally:
        json_receiver.close()
        smtp.close()
    assert_no_secrets(first.log + second.log, "the service's log (with -v)")
    wait_until_empty(watched, second)


def test_an_outbox_unwritable_for_trouble_minutes_is_told_once(tmp_path: Path, engine: Engine) -> None:
    receiver = JsonReceiver()
    settings = settings_for(tmp_path, [receiver.url], trouble_minutes=0.01)  # 0.6 s
    notices = Notices(settings)
    notices.start()
    hot = HotFolder(settings, Ledger(settings.state), notices.batch_reported)
    try:
        drop(settings, ["a.jpg"])
        with mock.patch.object(fsutil.os, "replace", side_effect=OSError(errno.ENOSPC, "No space left on device")):
            hot.process(files_in_inbox(settings), engine, stop=lambda: False)
        assert "No space left on device" in hot.trouble.cause
        notices.trouble(hot.trouble.cause)  # the service calls this each loop
        time.sleep(0.3)
        notices.trouble(hot.trouble.cause)
        time.sleep(0.5)
        assert receiver.bodies == [], "a failing write is told only once it has lasted trouble_minutes"
        for _ in range(3):
            notices.trouble(hot.trouble.cause)
            time.sleep(0.4)
        wait_for(lambda: len(receiver.bodies) == 1, "one trouble message")
        hot.trouble.next_try = 0  # the disk has room again: the report is written
        hot.retry()
        assert hot.trouble.cause == ""
        notices.trouble(hot.trouble.cause)
        wait_for(lambda: len(receiver.bodies) == 2, "the batch's own message, once its report is written")
    finally:
        notices.close()
        hot.ledger.close()
        receiver.close()
    told, reported = receiver.bodies
    assert told["title"] == "Scorer: the outbox cannot be written"
    assert "1 scored, 0 rejected, 0 duplicates" in reported["message"]
    assert "No space left on device" in told["message"] and "nothing is lost" in told["message"]
