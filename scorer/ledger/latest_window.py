"""What latest.xlsx shows, read from one snapshot of the ledger: the best rows, and counts of everything.

One pass over the window's scored rows (without their thumbnails) keeps the best
`watch.latest_rows` in a bounded heap and counts every creative by day and class; only the
rows that will be listed are then read whole. Memory grows with `latest_rows`, not with the history.
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from datetime import date, datetime

from scorer.ledger.schema import SCORED_COLUMNS, scored_from_row
from scorer.ledger.store import Ledger
from scorer.report.latest_book import DayCount, Window
from scorer.report.workbook import ReportContent
from scorer.results import BatchResult, Duplicate, ModelInfo, Rejected, Scored, engagement_score, rank
from scorer.settings import Settings

_JOIN = "FROM files JOIN batches ON batches.id = files.batch"
_CHUNK = 500  # ids per IN (...) query, well under SQLite's variable limit

# Per day: ("class", name) for scored creatives, ("decision", "rejected" | "duplicate") for the rest.
Tally = defaultdict[date, Counter[tuple[str, str]]]


def read_window(ledger: Ledger, settings: Settings, info: ModelInfo, now: float) -> tuple[ReportContent, Window]:
    """The rows latest.xlsx lists and the counts it shows, as of one consistent moment."""
    since = now - settings.watch.latest_days * 86400
    limit = settings.watch.latest_rows
    tally: Tally = defaultdict(Counter)
    with ledger.snapshot() as db:
        newest = int(db.execute("SELECT coalesce(max(id), 0) FROM batches").fetchone()[0])
        best = [key[2] for key in heapq.nsmallest(limit, _scan_scored(db, since, tally))]
        _count_others(db, since, tally)
        scored = rank([s for chunk in _chunks(best) for s in _scored(db, chunk)])
        rejected = [Rejected(name, location, reason or "", sha or "") for name, location, reason, sha in db.execute(
            f"SELECT files.name, coalesce(files.destination, files.path), files.reason, files.sha {_JOIN} "
            "WHERE decision = 'rejected' AND batches.created >= ? ORDER BY files.id DESC LIMIT ?", (since, limit))]
        duplicates = _duplicates(ledger, db, since, limit)
        track = ledger.launches.track_record(info.sha256, newest=limit)
    seen = {name for counts in tally.values() for kind, name in counts if kind == "class"}
    classes = (*info.classes, *sorted(seen - set(info.classes)))
    per_day = tuple(
        DayCount(day, {name: n for (kind, name), n in counts.items() if kind == "class"},
                 counts["decision", "rejected"], counts["decision", "duplicate"])
        for day, counts in sorted(tally.items(), reverse=True))
    window = Window(datetime.fromtimestamp(since), settings.watch.latest_days, limit, classes, per_day, newest)
    return ReportContent(BatchResult(scored, rejected, duplicates), info, settings.report, track), window


def _scan_scored(db: sqlite3.Connection, since: float, tally: Tally) -> Iterator[tuple[float, str, int]]:
    """Each scored row's rank key (as `rank` orders them) and id, counting it by day and class on the way."""
    rows = db.execute(
        f"SELECT files.id, files.name, files.result, batches.created {_JOIN} "
        "WHERE decision = 'scored' AND batches.created >= ?", (since,))
    for id_, name, result, created in rows:
        data = json.loads(result)
        probs = data["probs"]
        predicted = data["classes"][max(range(len(probs)), key=probs.__getitem__)]
        tally[date.fromtimestamp(created)]["class", predicted] += 1
        yield -round(engagement_score(probs), 9), name, id_


def _count_others(db: sqlite3.Connection, since: float, tally: Tally) -> None:
    rows = db.execute(f"SELECT files.decision, batches.created {_JOIN} "
                      "WHERE decision != 'scored' AND batches.created >= ?", (since,))
    for decision, created in rows:
        tally[date.fromtimestamp(created)]["decision", decision] += 1


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start:start + _CHUNK]


def _scored(db: sqlite3.Connection, ids: Sequence[int]) -> Iterator[Scored]:
    marks = ", ".join("?" * len(ids))
    for row in db.execute(f"SELECT {SCORED_COLUMNS} {_JOIN} WHERE files.id IN ({marks})", tuple(ids)):
        yield scored_from_row(row)


def _duplicates(ledger: Ledger, db: sqlite3.Connection, since: float, limit: int) -> list[Duplicate]:
    rows = db.execute(
        f"SELECT files.name, coalesce(files.destination, files.path), files.sha {_JOIN} "
        "WHERE decision = 'duplicate' AND batches.created >= ? ORDER BY files.id DESC LIMIT ?", (since, limit)
    ).fetchall()
    duplicates = []
    for name, location, sha in rows:
        original = ledger.earlier(sha)
        assert original is not None, f"duplicate {name} of content that was never scored"
        duplicates.append(Duplicate(name, location, original))
    return duplicates
