"""What the templates show: creative cards, the reports in the outbox, the model card, the service status.

Everything here is plain data read from what the other rooms wrote (results, the ledger, the
card JSON); nothing here scores, and nothing here writes.
"""

from __future__ import annotations

import base64
import json
import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from markupsafe import Markup

from scorer.decoding.vet import is_ignored_name
from scorer.fsutil import open_regular
from scorer.ledger import history
from scorer.report.evidence_columns import FILMSTRIP_PX
from scorer.report.filmstrip import filmstrip
from scorer.report.latest_book import LATEST_NAME
from scorer.results import BatchResult, ModelInfo, Neighbour, Scored, rank
from scorer.settings import Settings
from scorer.textsafe import display_text
from scorer.track_record import TrackRecord
from scorer.web.plot import scatter

_REPORT = re.compile(r"^engagement-report-[0-9]{8}-[0-9]{6}[A-Za-z0-9-]*\.xlsx$")
_BATCH = re.compile(r"-batch([0-9]+)(?:-[0-9]+)?\.xlsx$")
_INBOX_COUNT_CAP = 10_000


@dataclass(frozen=True)
class Card:
    """One creative's card: its rank, its result and its pictures (data: URLs, empty when there are none)."""

    rank: int
    scored: Scored
    image: str  # a video's is its cover
    overlay: str = ""  # a video's is drawn on the hook's frame that holds its class most
    looks_like: list[tuple[str, Neighbour]] = field(default_factory=list)
    filmstrip: str = ""  # a video's, as the report's Filmstrip column draws it


@dataclass(frozen=True)
class Gallery:
    """A result as the page draws it: ranked cards, then what was rejected or already scored."""

    cards: list[Card]
    result: BatchResult
    classes: tuple[str, ...]


@dataclass(frozen=True)
class ReportFile:
    """A workbook in the outbox, and the ledger batch it shows when it is one."""

    name: str
    modified: datetime
    size_kb: float
    batch: int | None


@dataclass(frozen=True)
class ModelView:
    """The Model page: the loaded model's facts, its pin, and its card when training wrote one."""

    info: ModelInfo
    pinned: str | None
    card: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)  # the card's headline, less what the ways' table shows
    track: TrackRecord | None = None  # its track record on launched creatives, once `scorer outcomes` made one
    plot: Markup = Markup()  # the record's scatter plot, predicted score against real engagement


def gallery(result: BatchResult, classes: tuple[str, ...]) -> Gallery:
    """The result's creatives, best first, as cards, their names cleaned for display."""
    result = _shown(result)
    cards = [_card(n, s) for n, s in enumerate(rank(result.scored), start=1)]
    return Gallery(cards, result, classes)


def _shown(result: BatchResult) -> BatchResult:
    """The result with every name as people are shown it (names in the ledger are as they arrived)."""

    def scored(s: Scored) -> Scored:
        return replace(s, name=display_text(s.name))

    return BatchResult(
        scored=[scored(s) for s in result.scored],
        rejected=[replace(r, name=display_text(r.name)) for r in result.rejected],
        duplicates=[replace(d, name=display_text(d.name), original=scored(d.original)) for d in result.duplicates],
    )


def _card(position: int, s: Scored) -> Card:
    neighbours = s.evidence.neighbours if s.evidence else ()
    strip = filmstrip(s.video.frames, FILMSTRIP_PX) if s.video is not None else None
    return Card(position, s, _data_url(s.thumbnail), _data_url(s.overlay),
                [(_data_url(post.thumbnail), post) for post in neighbours], _data_url(strip))


def _data_url(thumbnail: bytes | None) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail).decode() if thumbnail else ""


def list_reports(outbox: Path) -> list[ReportFile]:
    """The reports in the outbox, newest first (latest.xlsx is not one of them)."""
    found = []
    for entry in os.scandir(outbox):
        if not _REPORT.match(entry.name) or not entry.is_file(follow_symlinks=False):
            continue
        st = entry.stat(follow_symlinks=False)
        batch = _BATCH.search(entry.name)
        found.append(ReportFile(entry.name, datetime.fromtimestamp(st.st_mtime), round(st.st_size / 1024, 1),
                                int(batch.group(1)) if batch else None))
    return sorted(found, key=lambda r: (r.modified, r.name), reverse=True)


def report_path(outbox: Path, name: str) -> Path | None:
    """The outbox file a download link names, only when it is a report or latest.xlsx (never a path)."""
    if name != LATEST_NAME and not _REPORT.match(name):
        return None
    path = outbox / name
    return path if path.is_file() and not path.is_symlink() else None


def open_report(outbox: Path, name: str) -> BinaryIO | None:
    """The report a download link names, opened without following a link (None when it is not one).

    The download is served from this descriptor: a name swapped for a link after any check is never read.
    """
    if report_path(outbox, name) is None:
        return None
    try:
        return open_regular(outbox / name)
    except OSError:
        return None


def read_ledger(settings: Settings, batch: int | None) -> BatchResult | None:
    """A batch's rows from the watch service's ledger (latest.xlsx's window when batch is None); None without one."""
    return history.window_rows(settings) if batch is None else history.batch_rows(settings.state, batch)


def last_batch(settings: Settings) -> int:
    """The watch service's newest batch, 0 when it has none."""
    return history.newest_batch(settings.state)


def inbox_waiting(inbox: Path) -> int | None:
    """Files waiting at the top of the inbox (counted up to a cap), None when the inbox is missing."""
    try:
        with os.scandir(inbox) as entries:
            count = 0
            for entry in entries:
                if not is_ignored_name(entry.name) and entry.is_file(follow_symlinks=False):
                    count += 1
                    if count >= _INBOX_COUNT_CAP:
                        break
            return count
    except OSError:
        return None


def model_view(settings: Settings, info: ModelInfo) -> ModelView:
    """The loaded model, its full card (`<model>.card.json`, which `scorer train` writes) and its track record."""
    card_path = info.path.with_suffix(".card.json")
    card: dict[str, Any] = {}
    if card_path.is_file():
        try:
            loaded = json.loads(card_path.read_text(encoding="utf-8"))
            card = loaded if isinstance(loaded, dict) else {}
        except (OSError, json.JSONDecodeError):
            card = {}
    track = _track_record(settings, info.sha256)
    return ModelView(info, settings.model_sha256, card, _metrics(card), track,
                     scatter(track) if track else Markup())


def _metrics(card: dict[str, Any]) -> dict[str, Any]:
    """The card's headline without the ways of predicting, which the page shows in a table of their own.

    The headline carries them as lines for the report's Model sheet, which has no such table.
    """
    headline = card.get("headline")
    comparison = card.get("comparison")
    if not isinstance(headline, dict):
        return {}
    if not isinstance(comparison, dict) or not isinstance(comparison.get("accuracy"), dict):
        return headline
    shown = {*comparison["accuracy"], "Best supported"}
    return {key: value for key, value in headline.items() if key not in shown}


def _track_record(settings: Settings, model: str) -> TrackRecord | None:
    """The model's track record from the watch service's ledger, with as many launches as latest.xlsx lists."""
    # the plot needs the figures only: reading every pair's two thumbnails per page view would be waste
    return history.track_record(settings, model, thumbnails=False)
