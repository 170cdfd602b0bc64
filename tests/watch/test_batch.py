"""The batch protocol: a crash at any step, then recovery, scores every file exactly once.

The model is not under test here, so a fake one stands in (scores by colour); decoding
runs in the real worker processes. A crash is a BaseException raised at the chosen step,
after which a fresh ledger and HotFolder play the restarted service.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from openpyxl import load_workbook

from scorer.scoring.engine import Engine
from scorer.settings import Settings
from scorer.watch import batch as hotfolder
from scorer.watch import disposal
from scorer.watch import latest_rebuild as latest_module
from scorer.watch.batch import HotFolder
from scorer.watch.disposal import reason_path
from scorer.watch.latest_rebuild import LATEST_NAME, latest_is_stale, rebuild_latest
from tests.support.fakes import ColourModel, Crash
from tests.support.helpers import drop, files_in_inbox, hot_settings, inbox_files, restart, sheet
from tests.support.imagegen import write_creative
from tests.support.workbooks import files_across


def all_rows(settings: Settings) -> dict[str, list[str]]:
    reports = sorted(settings.outbox.glob("engagement-report-*.xlsx"))
    return {name: files_across(reports, name) for name in ("Ranking", "Rejected", "Duplicates")}


def test_a_batch_is_recorded_reported_and_each_file_put_in_its_place(settings: Settings, engine: Engine) -> None:
    drop(settings, ["a.jpg", "b.jpg", "stories/c.jpg"])
    (settings.inbox / "copy-of-a.jpg").write_bytes((settings.inbox / "a.jpg").read_bytes())
    (settings.inbox / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    hot = restart(settings)
    summary = hot.process(files_in_inbox(settings), engine, stop=lambda: False)
    assert summary is not None and (summary.scored, summary.rejected, summary.duplicates) == (3, 1, 1)
    assert summary.report.name.endswith("-batch1.xlsx") and summary.report.exists()
    assert sorted(sheet(summary.report, "Ranking")) == ["a.jpg", "b.jpg", "stories/c.jpg"]
    assert sheet(summary.report, "Rejected") == ["broken.jpg"]
    assert sheet(summary.report, "Duplicates") == ["copy-of-a.jpg"]
    assert files_in_inbox(settings) == [], "every decided file leaves the inbox"
    (day,) = settings.archive_dir.iterdir()
    assert sorted(p.relative_to(day).as_posix() for p in day.rglob("*.jpg")) == ["a.jpg", "b.jpg", "stories/c.jpg"]
    rejected = settings.rejected_dir
    assert sorted(p.name for p in rejected.iterdir()) == [
        "broken.jpg", "broken.jpg.reason.txt", "copy-of-a.jpg", "copy-of-a.jpg.reason.txt"]
    assert reason_path(rejected / "broken.jpg").read_text() == "file is incomplete or corrupt\n"
    assert "same content as a.jpg" in reason_path(rejected / "copy-of-a.jpg").read_text()
    assert hot.ledger.undisposed() == [] and hot.ledger.unreported() == []


def test_a_redropped_file_is_a_duplicate_that_names_the_earlier_one(settings: Settings, engine: Engine) -> None:
    drop(settings, ["a.jpg"])
    data = (settings.inbox / "a.jpg").read_bytes()
    hot = restart(settings)
    first = hot.process(files_in_inbox(settings), engine, stop=lambda: False)
    assert first is not None
    (settings.inbox / "a.jpg").write_bytes(data)
    again = hot.process(files_in_inbox(settings), engine, stop=lambda: False)
    assert again is not None and (again.scored, again.duplicates) == (0, 1)
    assert sheet(again.report, "Duplicates") == ["a.jpg"]
    reason = reason_path(settings.rejected_dir / "a.jpg").read_text()
    assert "same content as a.jpg" in reason and first.report.name in reason


def test_keep_mode_leaves_files_in_place_and_never_reports_them_twice(settings: Settings, engine: Engine) -> None:
    import dataclasses

    keep = dataclasses.replace(settings, watch=dataclasses.replace(settings.watch, after_scoring="keep"))
    drop(keep, ["a.jpg", "b.jpg"])
    hot = restart(keep)
    assert hot.process(inbox_files(keep), engine, stop=lambda: False) is not None
    assert [p.name for p in inbox_files(keep)] == ["a.jpg", "b.jpg"]
    assert all(hot.already_decided(p, os.lstat(p)) for p in inbox_files(keep))
    assert hot.process(inbox_files(keep), engine, stop=lambda: False) is None, "decided already"
    assert not keep.archive_dir.exists() and not keep.rejected_dir.exists()


def test_stop_abandons_the_batch_cleanly(settings: Settings, engine: Engine) -> None:
    drop(settings, ["a.jpg", "b.jpg"])
    hot = restart(settings)
    assert hot.process(files_in_inbox(settings), engine, stop=lambda: True) is None
    assert len(files_in_inbox(settings)) == 2 and hot.ledger.last_batch() == 0
    assert all(hot.ledger.attempts(s) == 0 for s in ("a", "b")), "abandoning on request is no crash"
    assert hot.process(files_in_inbox(settings), engine, stop=lambda: False) is not None


STEPS = ["scoring", "record", "report-write", "mark-reported", "dispose", "latest"]


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_then_restart_scores_each_file_exactly_once(
        settings: Settings, engine: Engine, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    names = [f"{n:02}.jpg" for n in range(10)]
    drop(settings, names)
    (settings.inbox / "zz-broken.jpg").write_bytes(b"junk")
    hot = restart(settings)
    ledger = hot.ledger
    with monkeypatch.context() as patch:
        _arm(patch, step, hot, settings)
        with pytest.raises(Crash):
            if hot.process(files_in_inbox(settings), engine, stop=lambda: False) is not None:
                rebuild_latest(hot.ledger, settings, engine.info)
    hot = restart(settings, ledger)
    hot.process(files_in_inbox(settings), engine, stop=lambda: False)
    if latest_is_stale(hot.ledger):
        rebuild_latest(hot.ledger, settings, engine.info)

    rows = all_rows(settings)
    assert sorted(rows["Ranking"]) == names, "each file exactly once across every report"
    assert rows["Rejected"] == ["zz-broken.jpg"] and rows["Duplicates"] == []
    assert files_in_inbox(settings) == []
    assert not list(settings.outbox.rglob(".~*")), "no temporary files left"
    assert sorted(sheet(settings.outbox / LATEST_NAME, "Ranking")) == names
    assert hot.ledger.undisposed() == [] and hot.ledger.unreported() == []
    archived = sorted(p.name for p in settings.archive_dir.rglob("*.jpg"))
    assert archived == names, "moved once, never copied twice"


def _arm(patch: pytest.MonkeyPatch, step: str, hot: HotFolder, settings: Settings) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise Crash(step)

    if step == "scoring":
        real_score = Engine.score

        def score_then_crash(self: Engine, items, **kw):  # type: ignore[no-untyped-def]
            real_score(self, items[:3], **kw)
            raise Crash(step)

        patch.setattr(Engine, "score", score_then_crash)
    elif step == "record":
        def record_then_crash(entries, info, report_for):  # type: ignore[no-untyped-def]
            return type(hot.ledger).write_batch(hot.ledger, entries, info, lambda n: crash())

        patch.setattr(hot.ledger, "write_batch", record_then_crash)
    elif step == "report-write":
        def half_written(path: Path, content: object, *, replace: bool = False, durable: bool = False) -> Path:
            path.with_name(f".~{path.stem}.{os.getpid()}.tmp").write_bytes(b"PK half a workbook")
            raise Crash(step)

        patch.setattr(hotfolder, "save_report", half_written)
    elif step == "mark-reported":
        patch.setattr(hot.ledger, "mark_reported", crash)
    elif step == "dispose":
        real_move = disposal.move
        calls = []

        def move_some(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(1)
            if len(calls) == 4:
                raise Crash(step)
            return real_move(*args, **kwargs)

        patch.setattr(disposal, "move", move_some)
    else:
        patch.setattr(latest_module, "save_latest", crash)


def test_a_file_that_keeps_killing_the_service_is_rejected_alone(settings: Settings, engine: Engine,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    drop(settings, ["a.jpg", "b.jpg", "c.jpg"])
    write_creative(settings.inbox / "poison.jpg", (255, 0, 255), (48, 40))
    monkeypatch.setattr(ColourModel, "poison_crashes", True)
    hot = restart(settings)
    crashes = 0
    for _ in range(5):
        try:
            summary = hot.process(files_in_inbox(settings), engine, stop=lambda: False)
        except Crash:
            crashes += 1
            hot = restart(settings, hot.ledger)
            continue
        break
    assert crashes == 3 and summary is not None
    rows = all_rows(settings)
    assert sorted(rows["Ranking"]) == ["a.jpg", "b.jpg", "c.jpg"] and rows["Rejected"] == ["poison.jpg"]
    reason = reason_path(settings.rejected_dir / "poison.jpg").read_text()
    assert "stopped 3 times while scoring it" in reason
    # As the reason says: check the file (here, what crashed is mended), then drop it in again. It is tried afresh.
    monkeypatch.setattr(ColourModel, "poison_crashes", False)
    os.rename(settings.rejected_dir / "poison.jpg", settings.inbox / "poison.jpg")
    again = hot.process(files_in_inbox(settings), engine, stop=lambda: False)
    assert again is not None and sheet(again.report, "Ranking") == ["poison.jpg"]


def test_latest_ranks_everything_recent_across_batches(settings: Settings, engine: Engine) -> None:
    hot = restart(settings)
    drop(settings, ["a.jpg", "b.jpg"])
    hot.process(files_in_inbox(settings), engine, stop=lambda: False)
    assert latest_is_stale(hot.ledger)
    rebuild_latest(hot.ledger, settings, engine.info)
    assert not latest_is_stale(hot.ledger)
    write_creative(settings.inbox / "c.jpg", (220, 50, 40), (48, 40), seed=9)
    (settings.inbox / "junk.jpg").write_bytes(b"junk")
    hot.process(files_in_inbox(settings), engine, stop=lambda: False)
    rebuild_latest(hot.ledger, settings, engine.info)
    latest = settings.outbox / LATEST_NAME
    ranking = load_workbook(latest)["Ranking"]
    header = [c.value for c in ranking[1]]
    assert header == [c.value for c in load_workbook(next(settings.outbox.glob("*-batch1.xlsx")))["Ranking"][1]]
    rows = [dict(zip(header, r, strict=True)) for r in ranking.iter_rows(min_row=2, values_only=True)]
    assert sorted(r["File"] for r in rows) == ["a.jpg", "b.jpg", "c.jpg"]
    assert [r["Rank"] for r in rows] == [1, 2, 3]
    assert rows[0]["File"] == "c.jpg", "the red creative ranks first"
    assert sheet(latest, "Rejected") == ["junk.jpg"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return hot_settings(tmp_path, "watch:\n  max_attempts: 3\n")
