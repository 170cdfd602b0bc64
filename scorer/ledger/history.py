"""The ledger read by those who only look: the web page reads batches, latest.xlsx's window and track records here.

Each call opens the ledger, reads one thing and closes it; with no ledger yet (no `scorer watch` has run
with this state folder) it answers None, or 0 for the newest batch, and creates none. Nothing here records
anything; opening goes through Ledger, which brings a ledger of an older version up to date, as every
opening does.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from scorer.ledger.latest_window import read_window
from scorer.ledger.schema import LEDGER_NAME
from scorer.ledger.store import Ledger
from scorer.results import BatchResult
from scorer.settings import Settings
from scorer.track_record import TrackRecord

T = TypeVar("T")


@contextmanager
def _opened(state: Path) -> Iterator[Ledger | None]:
    if not (state / LEDGER_NAME).is_file():
        yield None
        return
    ledger = Ledger(state)
    try:
        yield ledger
    finally:
        ledger.close()


def _read(state: Path, read: Callable[[Ledger], T], absent: T) -> T:
    with _opened(state) as ledger:
        return absent if ledger is None else read(ledger)


def newest_batch(state: Path) -> int:
    """The watch service's newest batch, 0 when it has none."""
    return _read(state, Ledger.last_batch, 0)


def batch_rows(state: Path, batch: int) -> BatchResult | None:
    """One batch's rows, as its report shows them."""
    return _read(state, lambda ledger: ledger.batch_result(batch), None)


def window_rows(settings: Settings) -> BatchResult | None:
    """latest.xlsx's own bounded window: its best rows, as the rebuilder lists them."""

    def read(ledger: Ledger) -> BatchResult:
        newest = ledger.last_batch()
        if not newest:
            return BatchResult()
        content, _ = read_window(ledger, settings, ledger.batch_model(newest), time.time())
        return content.result

    return _read(settings.state, read, None)


def track_record(settings: Settings, model: str, *, thumbnails: bool) -> TrackRecord | None:
    """A model's track record, with as many launches as latest.xlsx lists (thumbnails only when asked)."""
    return _read(settings.state, lambda ledger: ledger.launches.track_record(
        model, newest=settings.watch.latest_rows, thumbnails=thumbnails), None)
