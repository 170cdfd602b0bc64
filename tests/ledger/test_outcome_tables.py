"""The ledger's launches and track records: one kept by any earlier version still reads back, exactly."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from scorer.config import load_settings
from scorer.ledger.latest_window import read_window
from scorer.ledger.schema import LEDGER_NAME, TRACK_RECORD
from scorer.ledger.store import Ledger
from scorer.report.latest_book import LATEST_NAME, LAUNCH_HEADERS, save_latest
from scorer.settings import Settings
from tests.support.history import INFO, fill_history, record_launches

KEY = TRACK_RECORD + INFO.sha256


def _settings(root: Path) -> Settings:
    for name in ("inbox", "outbox", "state"):
        (root / name).mkdir()
    (root / "config.yaml").write_text("watch:\n  latest_rows: 50\n", encoding="utf-8")
    return load_settings(root / "config.yaml")


def _kept(state: Path) -> dict[str, Any]:
    with sqlite3.connect(state / LEDGER_NAME) as db:
        return json.loads(db.execute("SELECT value FROM meta WHERE key = ?", (KEY,)).fetchone()[0])


def _keep(state: Path, data: dict[str, Any]) -> None:
    with sqlite3.connect(state / LEDGER_NAME) as db:
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (json.dumps(data), KEY))


def _as_kept_by(version: str, data: dict[str, Any]) -> dict[str, Any]:
    """The track record as that version wrote it: the first had no headline, and its rows' `counted` said only
    "forward"; neither kept `settled`."""
    older = {key: value for key, value in data.items() if key != "settled"}
    if version == "first":
        del older["headline"], older["no_better_than_guess"]
        older["pairs"] = [{**row, "counted": row["posted_at"] >= row["scored_at"]} for row in data["pairs"]]
    return older


def _track_sheet(settings: Settings) -> list[tuple[Any, ...]]:
    """latest.xlsx's Track record sheet, made from the ledger as the watch service makes it."""
    ledger = Ledger(settings.state)
    try:
        content, window = read_window(ledger, settings, INFO, time.time())
    finally:
        ledger.close()
    path = save_latest(settings.outbox / LATEST_NAME, content, window)
    return [row[:len(LAUNCH_HEADERS)] for row in load_workbook(path)["Track record"].iter_rows(values_only=True)]


@pytest.mark.parametrize("version", ["first", "before settled"])
def test_a_track_record_kept_by_an_earlier_version_reads_back(tmp_path: Path, version: str) -> None:
    settings = _settings(tmp_path)
    made = fill_history(settings.state, 30, per_batch=10, days=20)
    # posted a day after scoring and read now: those scored in the last eight days have not settled yet
    record_launches(settings.state, made[:24], [int(4000 + 100 * s.score) for s in made[:24]], now=time.time())
    data = _kept(settings.state)
    counted = ["yes" if row["counted"] else "no" for row in data["pairs"][::-1]]
    assert "yes" in counted and "no" in counted, f"precondition not reached: {counted}"
    lines = list(data["headline"].items())
    _keep(settings.state, _as_kept_by(version, data))

    rows = _track_sheet(settings)
    assert [row[:2] for row in rows[1:1 + len(lines)]] == lines, "the figures and the verdict, as they were kept"
    start = rows.index(LAUNCH_HEADERS) + 1
    assert [row[1] for row in rows[start:]] == [row["post"] for row in data["pairs"][::-1]]
    assert [row[-1] for row in rows[start:]] == counted, "the launches the figures counted, and only those"


def test_the_track_record_sheet_gives_the_figures_per_format_beside_the_whole(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    made = fill_history(settings.state, 30, per_batch=10, days=20)
    formats = ["video" if n % 2 else "image" for n in range(30)]
    track = record_launches(settings.state, made, [int(4000 + 100 * s.score) for s in made], formats=formats)
    rows = _track_sheet(settings)
    lines = {row[0]: row[1] for row in rows[1:1 + len(track.headline)]}
    assert lines == track.headline
    assert lines["Image launches"] == track.formats["image"].line() and lines["Video launches"].startswith(
        "15 matched, 15 counted: Spearman ")
    start = rows.index(LAUNCH_HEADERS) + 1
    assert len(rows) - start == 30
