"""The hot folder's remaining holes: files replaced under their name, failed writes, passing share errors, names.

The fake colour model (tests/support/fakes.py) stands in; decoding runs in real worker processes.
Faults that a test cannot produce for real (a full disk, a file held open on a share, EACCES
for root) are injected at the system call.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sqlite3
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from unittest import mock
from xml.etree import ElementTree

import pytest

from scorer import fsutil
from scorer.decoding.decode import ItemGeometry, decode_file
from scorer.decoding.pool import DecodeJob, DecodePool
from scorer.decoding.vet import ImageLimits
from scorer.ledger.store import Ledger
from scorer.scoring.engine import Engine
from scorer.settings import Settings
from scorer.watch.batch import PASSING_TRIES
from scorer.watch.disposal import reason_path
from tests.support.fakes import COLOUR_INFO, ColourModel
from tests.support.helpers import drop, files_in_inbox, hot_settings, restart, sheet
from tests.support.imagegen import CLASS_COLOURS, write_creative


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return hot_settings(tmp_path, "watch:\n  max_attempts: 3\n")

RED = CLASS_COLOURS["High"]
BLUE = CLASS_COLOURS["Low"]


def test_a_file_replaced_while_its_batch_runs_is_new_input(settings: Settings, engine: Engine) -> None:
    banner = settings.inbox / "banner.jpg"
    write_creative(banner, BLUE, (48, 40), seed=1)
    old = banner.read_bytes()
    replaced = []

    def re_export(done: int) -> None:
        # The marketer re-exports banner.jpg while the batch that read (and scored) the old bytes still runs.
        if done and not replaced and banner.read_bytes() == old:
            tmp = banner.with_name(".export.jpg")
            write_creative(tmp, RED, (48, 40), seed=2)
            os.replace(tmp, banner)
            replaced.append(banner.read_bytes())

    hot = restart(settings)
    first = hot.process([banner], engine, stop=lambda: False, progress=re_export)
    assert first is not None and replaced
    assert banner.read_bytes() == replaced[0], "the new file stays in the inbox"
    assert not list(settings.archive_dir.rglob("banner*")), "nothing archived under the old file's result"
    second = hot.process(files_in_inbox(settings), engine, stop=lambda: False)
    assert second is not None and second.scored == 1, "the new file gets its own result"
    (archived,) = settings.archive_dir.rglob("banner*")
    assert archived.read_bytes() == replaced[0] and files_in_inbox(settings) == []
    assert archived.name == "banner-2.jpg", "not under the name the first report gave the old file"
    high = [r for r in sheet(second.report, "Ranking")]
    assert high == ["banner.jpg"] and hot.ledger.undisposed() == []


def _refuse(patch: pytest.MonkeyPatch, suffix: str, code: int) -> None:
    real = os.replace

    def replace(a: str | Path, b: str | Path) -> None:
        if str(b).endswith(suffix):
            raise OSError(code, os.strerror(code), str(b))
        real(a, b)

    patch.setattr(fsutil.os, "replace", replace)


def test_a_failed_report_write_keeps_the_inbox_flowing_and_is_written_later(settings: Settings,
                                                                             engine: Engine) -> None:
    drop(settings, ["a.jpg", "b.jpg"])
    hot = restart(settings)
    with mock.patch.object(fsutil.os, "replace", side_effect=OSError(errno.ENOSPC, "No space left on device")):
        summary = hot.process(files_in_inbox(settings), engine, stop=lambda: False)
        assert summary is not None and summary.scored == 2
    assert not summary.report.exists() and files_in_inbox(settings) == [], "files move on; the ledger holds the results"
    assert "No space left on device" in hot.trouble.cause and hot.ledger.unreported()
    write_creative(settings.inbox / "c.jpg", RED, (48, 40), seed=7)
    later = hot.process(files_in_inbox(settings), engine, stop=lambda: False)
    assert later is not None and later.report.exists() and sheet(later.report, "Ranking") == ["c.jpg"]
    hot.trouble.next_try = 0  # the backoff has passed
    hot.retry()
    assert hot.trouble.cause == "" and hot.ledger.unreported() == []
    assert sorted(sheet(summary.report, "Ranking")) == ["a.jpg", "b.jpg"], "written once the cause is gone"


def test_a_restart_while_the_disk_is_full_does_not_stop_the_service(settings: Settings,
                                                                    engine: Engine) -> None:
    drop(settings, ["a.jpg"])
    hot = restart(settings)
    with mock.patch.object(fsutil.os, "replace", side_effect=OSError(errno.ENOSPC, "No space left on device")):
        assert hot.process(files_in_inbox(settings), engine, stop=lambda: False) is not None
        again = restart(settings, hot.ledger)  # recovery repeats the write: it must not raise
    assert "No space left" in again.trouble.cause and again.ledger.unreported()
    again.trouble.next_try = 0
    again.retry()
    assert again.ledger.unreported() == [] and again.trouble.cause == ""


def test_a_ledger_that_cannot_be_written_leaves_the_files_for_the_next_scan(settings: Settings,
                                                                            engine: Engine) -> None:
    from scorer.watch.service import _guarded

    drop(settings, ["a.jpg"])
    hot = restart(settings)
    full = sqlite3.OperationalError("database or disk is full")
    with mock.patch.object(Ledger, "write_batch", side_effect=full):
        assert _guarded(hot, lambda: hot.process(files_in_inbox(settings), engine, stop=lambda: False)) is None
    assert "database or disk is full" in hot.trouble.cause and len(files_in_inbox(settings)) == 1
    assert hot.process(files_in_inbox(settings), engine, stop=lambda: False) is not None
    assert files_in_inbox(settings) == []


def flaky_decode(path: Path, geometry: ItemGeometry | None, limits: ImageLimits, thumb_px: int):  # type: ignore[no-untyped-def]
    """decode_file, but the share answers EACCES to opening `flaky*` the first two times (`never*`: always)."""
    tries = path.parent.parent / f"tries-{path.name}"
    n = int(tries.read_text()) if tries.exists() else 0
    tries.write_text(str(n + 1))
    real_open = os.open

    def share_open(name: str | Path, *args: object, **kwargs: object) -> int:
        if Path(name) == path and (path.name.startswith("never") or n < 2):
            raise PermissionError(errno.EACCES, "Permission denied", str(name))
        return real_open(name, *args, **kwargs)  # type: ignore[arg-type]

    with mock.patch("os.open", share_open):
        return decode_file(path, geometry, limits, thumb_px)


@pytest.fixture
def share_engine() -> Iterator[Engine]:
    pool = DecodePool(DecodeJob(ColourModel.geometry, ImageLimits(), 24, flaky_decode), workers=1, timeout=20)
    eng = Engine(ColourModel(), pool, COLOUR_INFO)
    yield eng
    eng.close()


def test_a_passing_share_error_is_retried_before_a_file_is_rejected(settings: Settings,
                                                                    share_engine: Engine) -> None:
    drop(settings, ["flaky.jpg", "never.jpg", "fine.jpg"])
    hot = restart(settings)
    for _ in range(PASSING_TRIES):
        hot.process(files_in_inbox(settings), share_engine, stop=lambda: False)
    reports = sorted(settings.outbox.glob("engagement-report-*.xlsx"))
    scored = [name for report in reports for name in sheet(report, "Ranking")]
    rejected = [name for report in reports for name in sheet(report, "Rejected")]
    assert sorted(scored) == ["fine.jpg", "flaky.jpg"] and rejected == ["never.jpg"]
    reason = reason_path(settings.rejected_dir / "never.jpg").read_text()
    assert "Permission denied" in reason and files_in_inbox(settings) == []


NOT_AN_IMAGE = "not an image (accepted: JPEG, PNG, WEBP): save it in one of these formats\n"


def test_a_reason_file_dropped_with_its_image_keeps_both(settings: Settings, engine: Engine) -> None:
    # A dropped .txt is a sidecar with no creative: it leaves the inbox once watch.orphan_hours have passed.
    settings = dataclasses.replace(settings, watch=dataclasses.replace(settings.watch, orphan_hours=0.001))
    (settings.inbox / "x.jpg").write_bytes(b"not an image")
    (settings.inbox / "x.jpg.reason.txt").write_text("my own notes")
    time.sleep(0.001 * 3600 + 0.2)
    hot = restart(settings)
    assert hot.process(sorted(files_in_inbox(settings), reverse=True), engine, stop=lambda: False) is not None
    texts = {p.name: p.read_text() for p in settings.rejected_dir.iterdir()}
    assert "my own notes" in texts.values(), "the dropped file is never overwritten by a reason"
    reasons = sorted(t for t in texts.values() if t.endswith("\n"))
    assert len(reasons) == 2, f"each rejected file has its reason: {texts}"
    assert reasons[0].startswith("no creative named x.jpg.reason.* arrived") and reasons[1] == NOT_AN_IMAGE


def test_a_name_near_255_bytes_is_rejected_with_its_reason_and_done(settings: Settings,
                                                                    engine: Engine) -> None:
    name = "x" * 246 + ".jpg"
    (settings.inbox / name).write_bytes(b"not an image")
    hot = restart(settings)
    assert hot.process(files_in_inbox(settings), engine, stop=lambda: False) is not None
    assert files_in_inbox(settings) == [] and hot.ledger.undisposed() == []
    (moved,) = [p for p in settings.rejected_dir.iterdir() if not p.name.endswith(".reason.txt")]
    assert reason_path(moved).read_text() == NOT_AN_IMAGE


def test_unicode_noncharacters_in_names_and_class_names_keep_the_workbook_readable(
        settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    write_creative(settings.inbox / "sale\ufffe\uffff.jpg", RED, (48, 40), seed=3)
    monkeypatch.setattr(ColourModel, "classes", ("Low", "=cmd|' /C calc'!A0", "High\ufffe"))
    monkeypatch.setattr(engine, "opened", dataclasses.replace(engine.opened, classes=ColourModel.classes))
    hot = restart(settings)
    summary = hot.process(files_in_inbox(settings), engine, stop=lambda: False)
    assert summary is not None
    with zipfile.ZipFile(summary.report) as book:
        for part in book.namelist():
            if part.endswith(".xml"):
                ElementTree.fromstring(book.read(part))  # expat refuses U+FFFE/U+FFFF, as Excel does
        ranking = book.read("xl/worksheets/sheet1.xml").decode()
    assert "<f>" not in ranking, "no header or cell became a formula"
