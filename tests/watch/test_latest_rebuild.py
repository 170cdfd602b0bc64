"""latest.xlsx: bounded to the best rows with a Summary of the whole window, rebuilt off the scoring path."""

from __future__ import annotations

import io
import logging
import os
import random
import re
import signal
import sqlite3
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pytest
from openpyxl import load_workbook

from scorer.config import load_settings
from scorer.ledger.schema import LEDGER_NAME
from scorer.ledger.store import Ledger
from scorer.report.latest_book import LAUNCH_HEADERS, NO_RECORD
from scorer.results import Scored, rank
from scorer.settings import Settings
from scorer.watch.latest_rebuild import LATEST_NAME, LatestRebuilder, rebuild_latest
from tests.support.helpers import COLOURS, Project, Service, configure, reports, start
from tests.support.history import CLASSES, INFO, fill_history, record_launches, thumbnail
from tests.support.imagegen import creative, write_creative
from tests.support.workbooks import as_libreoffice_reads, column

# The service fixtures of test_watch_service, used here by name.


def _settings(root: Path, **watch: object) -> Settings:
    for name in ("inbox", "outbox", "state"):
        (root / name).mkdir(exist_ok=True)
    lines = ["watch:", *(f"  {key}: {value}" for key, value in watch.items())]
    (root / "config.yaml").write_text("\n".join(lines) + "\n")
    return load_settings(root / "config.yaml")


def summary(path: Path) -> tuple[list[str], dict[object, dict[str, int]]]:
    """The Summary sheet: its lines of text, and its table as {day or 'Total': {column: count}}."""
    book = load_workbook(path, read_only=True)
    rows = list(book["Summary"].iter_rows(values_only=True))
    book.close()
    start = next(i for i, row in enumerate(rows) if row and row[0] == "Day")
    names = list(rows[start])
    table = {row[0].date() if row[0] != "Total" else "Total": dict(zip(names[1:], row[1:], strict=True))
             for row in rows[start + 1:]}
    return [str(row[0]) for row in rows[:start] if row and row[0]], table


def _predicted(s: Scored) -> str:
    return s.classes[s.probs.index(max(s.probs))]


def test_latest_lists_the_best_rows_and_counts_the_whole_window(tmp_path: Path) -> None:
    settings = _settings(tmp_path, latest_rows=25, latest_days=30)
    made = fill_history(settings.state, 300, rejected_every=40, per_batch=50, days=6, thumb=thumbnail(24))
    with sqlite3.connect(settings.state / LEDGER_NAME) as db:  # the first batch falls out of the window
        db.execute("UPDATE batches SET created = ? WHERE id = 1", (time.time() - 40 * 86400,))
    window = made[50:]
    ledger = Ledger(settings.state)
    try:
        assert rebuild_latest(ledger, settings, INFO) == {"listed": 25, "scored": 250, "batch": 6}
        assert ledger.get("latest_batch") == "6"
    finally:
        ledger.close()

    path = settings.outbox / LATEST_NAME
    wb = load_workbook(path)
    assert wb.sheetnames == ["Summary", "Ranking", "Rejected", "Duplicates", "Model", "Track record"]
    assert [row[0].value for row in wb["Track record"].iter_rows()][1] == NO_RECORD, "no record yet: what makes one"
    best = rank(window)[:25]
    assert column(path, "Ranking") == [s.name for s in best], "the best 25 of the window, best first"
    assert column(path, "Ranking", "Rank") == list(range(1, 26))
    assert column(path, "Ranking", "Engagement score") == [round(s.score, 2) for s in best]
    assert len(wb["Ranking"]._images) == 25, "each listed creative has its thumbnail"
    rejected = [i for i in range(50, 300) if i % 40 == 0]
    assert column(path, "Rejected") == [f"history-broken-{i:06}.jpg" for i in reversed(rejected)], "newest first"

    lines, table = summary(path)
    by_day: dict[date, Counter[str]] = {}
    for s in window:
        by_day.setdefault(date.fromtimestamp(s.scored_at), Counter())[_predicted(s)] += 1
    for i in rejected:
        by_day[date.fromtimestamp(made[i].scored_at)]["Rejected"] += 1
    assert list(table) == [*sorted(by_day, reverse=True), "Total"], "one row per day, newest first"
    for day, counts in by_day.items():
        row = table[day]
        assert {c: row[c] for c in CLASSES} == {c: counts[c] for c in CLASSES}, day
        assert row["Scored"] == sum(counts[c] for c in CLASSES) and row["Rejected"] == counts["Rejected"]
        assert row["Duplicates"] == 0
    assert table["Total"]["Scored"] == 250 and table["Total"]["Rejected"] == len(rejected)
    assert any("Ranking lists the best 25 of the 250 creatives" in line and "watch.latest_rows" in line
               for line in lines), lines
    assert any(f"Rejected lists the newest {len(rejected)} of {len(rejected)}" in line for line in lines), lines


def _post_thumbnail() -> bytes:
    out = io.BytesIO()
    creative((40, 120, 220), (24, 30)).save(out, "JPEG", quality=80)
    return out.getvalue()


def test_latest_has_a_track_record_sheet_that_libreoffice_opens(tmp_path: Path) -> None:
    settings = _settings(tmp_path, latest_rows=20)
    made = fill_history(settings.state, 30, per_batch=10, days=3, thumb=thumbnail(24))
    rng = random.Random(5)
    totals = [int(4000 + 100 * s.score + rng.randint(0, 300)) for s in made[:24]]  # likes follow the scores
    record = record_launches(settings.state, made[:24], totals, thumb=_post_thumbnail())
    assert record.verdict.startswith("the ranking agrees"), f"precondition not reached: {record.verdict}"
    ledger = Ledger(settings.state)
    try:
        rebuild_latest(ledger, settings, INFO)
    finally:
        ledger.close()

    path = settings.outbox / LATEST_NAME
    wb = load_workbook(path)
    assert wb.sheetnames[-1] == "Track record"
    ws = wb["Track record"]
    rows = [row[:10] for row in ws.iter_rows(values_only=True)]
    lines = list(record.headline.items())
    assert str(rows[0][0]).startswith(f"Track record of model {INFO.sha256[:12]}")
    assert [row[:2] for row in rows[1:1 + len(lines)]] == lines, "the figures, the verdict first"
    assert "the newest 20 launched creatives (at most 20" in str(rows[1 + len(lines)][0])
    assert rows[3 + len(lines)] == LAUNCH_HEADERS
    listed = rows[4 + len(lines):]
    newest = record.launches[::-1][:20]
    assert [row[1] for row in listed] == [k.post for k in newest], "each launch, newest post first"
    for row, launch in zip(listed, newest, strict=True):
        assert launch.posted_at is not None and abs(row[0].timestamp() - launch.posted_at) < 1
        creative = launch.creative
        assert row[3:] == (creative.name, None, creative.predicted, pytest.approx(creative.score), launch.total,
                           launch.real_class, "yes")
    assert len(ws._images) == 40, "both thumbnails of each pair: the post as launched, the creative as scored"

    read = as_libreoffice_reads(path, tmp_path / "csv")
    if read is not None:
        shown = read["Track record"]
        assert shown[1][:2] == ["Verdict", record.verdict]
        start = next(i for i, row in enumerate(shown) if row[:2] == ["Posted", "Post"]) + 1
        assert [row[1] for row in shown[start:]] == [k.post for k in newest]


def test_the_rebuilder_coalesces_retries_a_failed_write_and_finishes_on_close(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="scorer.watch.latest_rebuild")
    settings = _settings(tmp_path, latest_interval=2)
    fill_history(settings.state, 20, per_batch=10)

    def writes() -> list[float]:
        return [r.created for r in caplog.records if r.getMessage() == "rewriting latest.xlsx"]

    latest = settings.outbox / LATEST_NAME
    latest.mkdir()  # the rename onto it fails, as on a share where someone holds the file open
    rebuilder = LatestRebuilder(settings, INFO)
    rebuilder.start()
    try:
        time.sleep(0.5)
        assert writes() == [], "nothing changed since the last latest.xlsx: no rebuild"
        fill_history(settings.state, 10, per_batch=10, prefix="new", mark_written=False)
        for _ in range(5):
            rebuilder.changed()
        _wait(lambda: rebuilder.problem is not None)
        assert "IsADirectoryError" in str(rebuilder.problem)
        assert len(writes()) == 1, "five changes at once: one rebuild"
        latest.rmdir()
        _wait(latest.is_file, timeout=6)
        assert writes()[1] - writes()[0] >= 1.9, "retried after the backoff, not at once"
        _wait(lambda: rebuilder.problem is None)
        assert summary(latest)[1]["Total"]["Scored"] == 30
        fill_history(settings.state, 10, per_batch=10, prefix="last", mark_written=False)
        rebuilder.changed()
    finally:
        rebuilder.close()
    assert len(writes()) == 3, "the change inside the interval was written on close"
    assert summary(latest)[1]["Total"]["Scored"] == 40
    assert not [p for p in os.listdir(settings.outbox) if p.startswith(".~")], "no temporary file left"


@pytest.mark.slow
def test_close_stops_a_low_priority_rebuild_and_writes_everything_at_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="scorer.watch.latest_rebuild")
    settings = _settings(tmp_path, latest_interval=60, latest_rows=3000)
    fill_history(settings.state, 3000, thumb=thumbnail(24), mark_written=False)
    rebuilder = LatestRebuilder(settings, INFO)
    rebuilder.start()  # stale: a long rebuild starts at once
    _wait(lambda: any(r.getMessage() == "rewriting latest.xlsx" for r in caplog.records))
    time.sleep(0.5)
    fill_history(settings.state, 10, per_batch=10, prefix="late", mark_written=False)
    rebuilder.changed()
    began = time.monotonic()
    rebuilder.close()
    took = time.monotonic() - began
    rewrites = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rewrote")]
    assert len(rewrites) == 1 and "batches up to 16" in rewrites[0], rewrites
    assert summary(settings.outbox / LATEST_NAME)[1]["Total"]["Scored"] == 3010
    assert not [p for p in os.listdir(settings.outbox) if p.startswith(".~")], "the stopped rebuild cleaned up"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "stopping it is no failure"
    print(f"close() took {took:.1f} s")


def _wait(condition, timeout: float = 5) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_failing_latest_never_stops_scoring_and_the_last_batch_is_in_it_at_exit(
        watched: Project, services: list[Service]) -> None:
    configure(watched, latest_interval=2)
    (watched.root / "state").mkdir(exist_ok=True)
    fill_history(watched.root / "state", 40, per_batch=5, thumb=thumbnail(24))  # batches 1-8
    service = start(watched, services)
    service.wait_message("READY=1")
    latest = watched.outbox / LATEST_NAME
    latest.mkdir()  # every write of latest.xlsx fails until it is gone

    # A failing latest.xlsx never stops scoring; it is shown in STATUS= and retried.
    drop(watched, "a.jpg")
    service.wait_log(r"batch 9: 1 scored")
    service.wait_log(r"latest.xlsx not written \(IsADirectoryError")
    drop(watched, "b.jpg")
    service.wait_log(r"batch 10: 1 scored")
    service.wait_message_matching(r"STATUS=.*latest.xlsx not written \(IsADirectoryError")
    latest.rmdir()
    service.wait_log(r"latest.xlsx written again after \d+ failed tries", timeout=30)
    assert summary(latest)[1]["Total"]["Scored"] == 42

    # The last batch before SIGTERM is in latest.xlsx when the service has exited.
    drop(watched, "e.jpg")
    service.wait_log(r"batch 11: 1 scored")
    code, took = service.signal(signal.SIGTERM)
    assert code == 0 and took < 10, service.log
    lines, table = summary(latest)
    assert table["Total"]["Scored"] == 43 and any("up to batch 11" in line for line in lines), service.log
    assert "e.jpg" in column(latest, "Ranking")
    assert column(reports(watched)[-1], "Ranking") == ["e.jpg"], "batch reports stay per batch"


def test_the_service_writes_latest_off_the_scoring_path(watched: Project, services: list[Service]) -> None:
    # A history large enough that a rebuild takes a few seconds, so that a batch can be seen landing inside one.
    configure(watched, latest_interval=2, latest_rows=4000)
    (watched.root / "state").mkdir(exist_ok=True)
    fill_history(watched.root / "state", 4000, rejected_every=100, per_batch=500, thumb=thumbnail(24))  # batches 1-8
    service = start(watched, services)
    service.wait_message("READY=1")
    latest = watched.outbox / LATEST_NAME

    # A batch is scored and reported while latest.xlsx is being rebuilt from the large history.
    drop(watched, "c.jpg")
    began = service.wait_log(r"batch 9: 1 scored")
    rebuilding = service.wait_log(r"rewriting latest.xlsx", after=began)
    drop(watched, "d.jpg")
    reported = service.wait_log(r"batch 10: 1 scored", after=rebuilding)
    rebuilt = service.wait_log(r"rewrote .*latest.xlsx in", after=rebuilding)
    assert reported < rebuilt, f"batch 10 waited for latest.xlsx:\n{service.log}"

    # latest.xlsx catches up with batch 10 within the interval (or the rebuild under way, if that takes
    # longer) plus its own rebuild time.
    caught_up = service.wait_log(r"rewrote .*latest.xlsx .*batches up to 10", after=reported, timeout=30)
    under_way, own = (_seconds(service.lines[i][1]) for i in (rebuilt, caught_up))
    waited = service.lines[caught_up][0] - service.lines[reported][0]
    assert waited <= max(2, under_way) + own + 1, service.log
    assert summary(latest)[1]["Total"]["Scored"] == 4002


def _seconds(line: str) -> float:
    """How long a rebuild took, from its log line."""
    found = re.search(r" in ([\d.]+) s", line)
    assert found, line
    return float(found.group(1))


def drop(project: Project, name: str) -> None:
    write_creative(project.inbox / name, COLOURS[2], (64, 48), seed=len(name) + ord(name[0]))
