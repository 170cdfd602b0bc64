"""Sidecars that never meet a creative leave the inbox: rejected with their reason after watch.orphan_hours.

The first test runs a real `scorer watch` (the tiny learner, a real observer); the others drive
the hot folder in-process with the fake colour model, since the model is not under test here.
orphan_hours is at its floor, 0.001 h (3.6 s): a sidecar's age is read from its ctime, which
no test can set, so these tests wait that long.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import time
from datetime import datetime
from pathlib import Path

import pytest
from openpyxl import load_workbook

from scorer.context.plan import is_plan_name
from scorer.context.signals import zone
from scorer.decoding.vet import find_candidates
from scorer.ledger.store import Ledger
from scorer.score.run import collect_items
from scorer.scoring.engine import Engine, Item
from scorer.settings import Settings
from scorer.watch.batch import HotFolder
from scorer.watch.disposal import reason_path
from scorer.watch.triage import Triage
from tests.support.helpers import Project, Service, configure, hot_settings, reports, start, wait_until_empty
from tests.support.imagegen import CLASS_COLOURS, write_creative

# The fixtures of test_watch_service (a project with the tiny learner's ONNX export, running services)
# and of test_hotfolder (an engine on the fake colour model).

COLOURS = list(CLASS_COLOURS.values())
ORPHAN_SECONDS = 0.001 * 3600
PLANNED = "posted_at: 2026-12-03 18:00\nNew colours for spring\n"


def _reasons(report_paths: list[Path]) -> dict[str, str]:
    """File -> Reason on the Rejected sheets of these reports."""
    found: dict[str, str] = {}
    for path in report_paths:
        book = load_workbook(path, read_only=True)
        try:
            rows = list(book["Rejected"].iter_rows(values_only=True))
        finally:
            book.close()
        header = list(rows[0])
        found.update({str(row[header.index("File")]): str(row[header.index("Reason")]) for row in rows[1:]})
    return found


@pytest.mark.slow
def test_scorer_watch_rejects_orphans_and_late_sidecars_with_their_reasons(watched: Project,
                                                                          services: list[Service]) -> None:
    configure(watched, orphan_hours=0.001, rescan_seconds=0.5)
    service = start(watched, services)
    service.wait_message("READY=1")
    (watched.inbox / "README.txt").write_text("Drop the creatives of the week here.\n", encoding="utf-8")
    (watched.inbox / "drafts").mkdir()
    (watched.inbox / "drafts" / "notes.json").write_text('{"caption": "for later"}', encoding="utf-8")
    write_creative(watched.inbox / "banner.jpg", COLOURS[2], (64, 48), seed=1)
    (watched.inbox / "banner.txt").write_text(PLANNED, encoding="utf-8")
    began = time.monotonic()
    wait_until_empty(watched, service)

    assert time.monotonic() - began >= ORPHAN_SECONDS - 0.5, "an orphan waits watch.orphan_hours"
    rejected = watched.outbox / "rejected"
    assert sorted(p.relative_to(rejected).as_posix() for p in rejected.rglob("*") if p.is_file()) == [
        "README.txt", "README.txt.reason.txt", "drafts/notes.json", "drafts/notes.json.reason.txt"]
    assert (rejected / "README.txt").read_text(encoding="utf-8") == "Drop the creatives of the week here.\n"
    orphan = ("no creative named README.* arrived beside README.txt within 0.001 h (watch.orphan_hours): a sidecar "
              "holds the planned time and caption of the creative with its name; drop them together")
    assert reason_path(rejected / "README.txt").read_text(encoding="utf-8") == orphan + "\n"
    assert "no creative named notes.* arrived" in reason_path(rejected / "drafts" / "notes.json").read_text()
    (day,) = (watched.outbox / "scored").iterdir()
    assert sorted(p.name for p in day.iterdir()) == ["banner.jpg", "banner.txt"], "a sidecar goes with its creative"
    assert _reasons(reports(watched)) == {"README.txt": orphan, "drafts/notes.json": orphan.replace(
        "README.* arrived beside README.txt", "notes.* arrived beside notes.json")}

    # A sidecar for banner.jpg, which was scored already: rejected, saying when and into which report.
    scored = Ledger(watched.root / "state").earlier(hashlib.sha256((day / "banner.jpg").read_bytes()).hexdigest())
    assert scored is not None and scored.report
    (watched.inbox / "banner.txt").write_text(PLANNED, encoding="utf-8")
    wait_until_empty(watched, service)

    late = reason_path(rejected / "banner.txt").read_text(encoding="utf-8").rstrip("\n")
    when = datetime.fromtimestamp(scored.scored_at)
    assert late == (f"banner.txt came after its creative banner.jpg was already scored at {when:%Y-%m-%d %H:%M} "
                    f"(report {Path(scored.report).name}), so its time and caption were not used: drop a sidecar "
                    "before its creative, or with it")
    assert _reasons(reports(watched))["banner.txt"] == late
    assert sorted(p.name for p in day.iterdir()) == ["banner.jpg", "banner.txt"], "the first one is left alone"
    assert service.proc.poll() is None


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return hot_settings(tmp_path, "watch:\n  orphan_hours: 0.001\n")


def _decide(hot: HotFolder, settings: Settings, engine: Engine) -> list[str]:
    """What intake's rescan would release now, through one batch; returns what is left in the inbox."""
    found = find_candidates([settings.inbox], lambda name: not is_plan_name(name))
    ready = [p for p in found if not hot.waits(p, os.lstat(p))]
    if ready:
        hot.process(ready, engine, stop=lambda: False)
    return sorted(p.relative_to(settings.inbox).as_posix() for p in settings.inbox.rglob("*") if p.is_file())


def test_a_sidecar_waits_while_young_or_beside_its_creative_then_an_orphan_is_rejected(settings: Settings,
                                                                                      engine: Engine) -> None:
    inbox = settings.inbox
    (inbox / "README.txt").write_text("hello\n", encoding="utf-8")
    (inbox / "poster.txt").write_text(PLANNED, encoding="utf-8")
    # The creative is still being copied, under a temporary name.
    write_creative(inbox / "poster.part", COLOURS[0], (48, 40), seed=3, fmt="JPEG")
    hot = HotFolder(settings, Ledger(settings.state))
    assert _decide(hot, settings, engine) == ["README.txt", "poster.part", "poster.txt"], "young: nothing decided"
    time.sleep(ORPHAN_SECONDS + 0.2)
    assert _decide(hot, settings, engine) == ["poster.part", "poster.txt"], "a sidecar waits for its creative"
    assert reason_path(settings.rejected_dir / "README.txt").read_text().startswith(
        "no creative named README.* arrived beside README.txt within 0.001 h")
    (inbox / "poster.part").rename(inbox / "poster.jpg")
    assert _decide(hot, settings, engine) == [], "the creative came: its sidecar goes with it, however old"
    (day,) = settings.archive_dir.iterdir()
    assert sorted(p.name for p in day.iterdir()) == ["poster.jpg", "poster.txt"]
    assert not (settings.rejected_dir / "poster.txt").exists()


def test_with_keep_an_orphan_is_recorded_once_and_stays(settings: Settings, engine: Engine) -> None:
    keep = dataclasses.replace(settings, watch=dataclasses.replace(settings.watch, after_scoring="keep"))
    (keep.inbox / "notes.json").write_text("{}", encoding="utf-8")
    hot = HotFolder(keep, Ledger(keep.state))
    time.sleep(ORPHAN_SECONDS + 0.2)
    assert _decide(hot, keep, engine) == ["notes.json"]
    (report,) = sorted(keep.outbox.glob("engagement-report-*.xlsx"))
    assert re.match(r"no creative named notes\.\* arrived", _reasons([report])["notes.json"])
    assert hot.waits(keep.inbox / "notes.json", os.lstat(keep.inbox / "notes.json")), "decided already"
    assert _decide(hot, keep, engine) == ["notes.json"]
    assert len(list(keep.outbox.glob("engagement-report-*.xlsx"))) == 1, "never reported twice"
    assert not keep.rejected_dir.exists()


def test_the_hot_folder_and_scorer_score_give_each_creative_the_same_plan_and_note(settings: Settings) -> None:
    inbox = settings.inbox
    for name in ("a", "b", "c", "d"):
        write_creative(inbox / f"{name}.jpg", COLOURS[0], (32, 32), seed=ord(name))
    (inbox / "a.txt").write_text(PLANNED, encoding="utf-8")
    (inbox / "b.json").write_text("{not json", encoding="utf-8")
    (inbox / "plan.csv").write_text("file,posted_at,caption\nc.jpg,2026-12-04 09:00,From the plan\n"
                                    "d.jpg,someday,Bad time\n", encoding="utf-8")
    items, rejected, _ = collect_items([inbox], zone(settings.context.timezone))
    ledger = Ledger(settings.state)
    try:
        entries, chunks = Triage(settings, ledger).split(sorted(inbox.glob("*.jpg")), lambda n: None)
    finally:
        ledger.close()

    def plans(of: list[Item]) -> dict[str, tuple[str, str]]:
        return {i.name: (i.plan.caption if i.plan else "", i.plan_note) for i in of}

    (chunk,) = chunks
    assert plans(items) == plans(list(chunk)) == {
        "a.jpg": ("New colours for spring", ""),
        "b.jpg": ("", "image-only: its sidecar b.json was rejected (see the Rejected sheet)"),
        "c.jpg": ("From the plan", ""),
        "d.jpg": ("", plans(items)["d.jpg"][1]),
    }
    assert plans(items)["d.jpg"][1].startswith("image-only: plan.csv line 3: the time 'someday' is not a date")
    assert [(r.name, r.reason) for r in rejected] == [(e.candidate.name, e.reason) for e in entries]
    assert [e.decision for e in entries] == ["rejected"]
