"""Plans without a model: sidecar and plan.csv parsing, the time zone, and a sidecar's move surviving a crash."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from scorer.config import load_settings
from scorer.context.plan import (
    creatives_beside,
    find_plans,
    is_context_name,
    is_plan_name,
    is_sidecar_name,
    read_sidecar,
)
from scorer.context.signals import Account, planned_signals
from scorer.errors import ConfigError, ContextError
from scorer.ledger.schema import Candidate, Entry
from scorer.ledger.store import Ledger
from scorer.results import ModelInfo
from scorer.settings import Settings
from scorer.watch import disposal
from scorer.watch.disposal import carry_sidecars, dispose_pending

PARIS = ZoneInfo("Europe/Paris")


def test_a_time_without_an_offset_is_taken_in_the_accounts_time_zone(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("posted_at: 2026-12-03 18:00\nWinter #sale\n", encoding="utf-8")
    (tmp_path / "b.json").write_text('{"posted_at": "2026-12-03T18:00Z", "caption": "x"}', encoding="utf-8")
    a, b = read_sidecar(tmp_path / "a.txt", PARIS), read_sidecar(tmp_path / "b.json", PARIS)
    assert a.posted_at == datetime(2026, 12, 3, 17, 0, tzinfo=timezone.utc) and a.caption == "Winter #sale"
    assert b.posted_at == datetime(2026, 12, 3, 18, 0, tzinfo=timezone.utc)
    account = Account(datetime(2026, 11, 1, tzinfo=timezone.utc), 2.0, 5000.0)
    signals = planned_signals([a.posted_at, b.posted_at], a.caption, account, PARIS)
    assert list(signals["hour"]) == [18, 19] and list(signals["weekday"]) == [3, 3]  # Thursday, in Paris
    assert list(signals["hashtags"]) == [1, 1]


def test_a_caption_only_sidecar_has_no_time(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Time: to shine\n#new\n", encoding="utf-8")
    plan = read_sidecar(tmp_path / "a.txt", PARIS)
    assert plan.posted_at is None and plan.caption == "Time: to shine\n#new"


@pytest.mark.parametrize(("name", "text", "reason"), [
    ("a.json", "{not json", "a.json is not valid JSON"),
    ("a.json", "[1, 2]", "a.json must hold one object"),
    ("a.txt", "posted_at: 3 pm tomorrow\n", "a.txt: the time '3 pm tomorrow' is not a date and time: write it as"),
])
def test_an_unreadable_sidecar_names_the_fix(tmp_path: Path, name: str, text: str, reason: str) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(ContextError, match="^" + reason.replace("(", r"\(").replace("[", r"\[")):
        read_sidecar(tmp_path / name, PARIS)


def test_plan_csv_rows_are_found_by_path_or_name_and_a_bad_row_gives_a_note(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "june").mkdir(parents=True)
    (inbox / "plan.csv").write_text(
        "file,posted_at,caption\njune/a.jpg,2026-06-01 09:00,first\nb.jpg,soon,second\n", encoding="utf-8")
    for name in ("june/a.jpg", "june/b.jpg", "c.jpg"):
        (inbox / name).write_bytes(b"jpeg")
    plans = find_plans([(inbox / n, inbox) for n in ("june/a.jpg", "june/b.jpg", "c.jpg")], PARIS)
    assert plans.found[inbox / "june/a.jpg"].caption == "first"
    assert plans.found[inbox / "june/a.jpg"].posted_at == datetime(2026, 6, 1, 7, 0, tzinfo=timezone.utc)
    assert plans.notes[inbox / "june/b.jpg"].startswith("image-only: plan.csv line 3: the time 'soon' is not")
    assert inbox / "c.jpg" not in plans.found and inbox / "c.jpg" not in plans.notes
    assert plans.rejected == []


def test_plans_and_sidecars_are_never_taken_for_creatives() -> None:
    assert all(is_context_name(n) for n in ("plan.csv", "PLAN.CSV", "a.txt", "a.JSON"))
    assert not any(is_context_name(n) for n in ("a.jpg", "plan.csv.jpg", "a.png"))


def test_a_sidecar_belongs_to_the_files_beside_it_with_its_stem(tmp_path: Path) -> None:
    for name in ("banner.jpg", "banner.png", "banner", "banner.json", "banner.txt", "banner.tar.gz", "banner2.jpg",
                 "plan.csv", "BANNER.TXT"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "banner.d").mkdir()
    assert creatives_beside(tmp_path / "banner.txt") == [tmp_path / n for n in ("banner", "banner.jpg", "banner.png")]
    assert creatives_beside(tmp_path / "README.txt") == []
    assert creatives_beside(tmp_path / "BANNER.TXT") == [], "read by no creative: sidecar_of looks for .txt and .json"
    assert is_plan_name("Plan.CSV") and not is_sidecar_name("plan.csv") and is_sidecar_name("notes.JSON")


def test_an_unknown_time_zone_is_a_config_error_that_names_the_fix(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("context:\n  timezone: Mars/Olympus\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="'context.timezone' .* is 'Mars/Olympus', not a time zone: use an IANA"):
        load_settings(config)


def _recorded(tmp_path: Path) -> tuple[Settings, Ledger, Path]:
    settings = dataclasses.replace(Settings(), inbox=tmp_path / "inbox", outbox=tmp_path / "out",
                                   state=tmp_path / "state")
    for folder in (settings.inbox, settings.outbox, settings.state):
        folder.mkdir()
    creative = settings.inbox / "a.jpg"
    creative.write_bytes(b"jpeg bytes")
    (settings.inbox / "a.txt").write_text("posted_at: 2026-12-03 18:00\nhi\n", encoding="utf-8")
    st = os.lstat(creative)
    candidate = Candidate(creative, "a.jpg", hashlib.sha256(b"jpeg bytes").hexdigest(), st.st_size, st.st_mtime_ns)
    ledger = Ledger(settings.state)
    destination = settings.archive_dir / "2026-12-01" / "a.jpg"
    ledger.write_batch([Entry(candidate, "scored", destination=destination)],
                        _info(), lambda n: settings.outbox / f"r{n}.xlsx")
    return settings, ledger, destination


def _info() -> ModelInfo:
    return ModelInfo(Path("m.pkl"), "0" * 64, ("Low", "High"), "cpu", "onnx", "", {})


def test_a_crash_after_the_sidecar_moved_leaves_nothing_behind(tmp_path: Path) -> None:
    settings, ledger, destination = _recorded(tmp_path)
    # The service died after the sidecar went and before its creative did: the restart finishes the move.
    carry_sidecars(settings.inbox / "a.jpg", destination, settings.archive_dir)
    assert dispose_pending(ledger, settings) is None
    assert sorted(p.name for p in destination.parent.iterdir()) == ["a.jpg", "a.txt"]
    assert list(settings.inbox.iterdir()) == []
    assert ledger.undisposed() == []


def test_a_sidecar_crosses_filesystems_through_a_temporary_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    settings, ledger, destination = _recorded(tmp_path)
    real_rename = os.rename

    def rename(src: object, dst: object) -> None:
        if str(src).endswith(".txt"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_rename(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(disposal.os, "rename", rename)
    assert dispose_pending(ledger, settings) is None
    assert (destination.parent / "a.txt").read_text(encoding="utf-8") == "posted_at: 2026-12-03 18:00\nhi\n"
    assert list(settings.inbox.iterdir()) == []
    assert not [p for p in settings.archive_dir.rglob(".*")], "no temporary left"


def test_planned_times_of_the_coming_week_keep_their_local_hour_across_a_clock_change() -> None:
    account = Account(datetime(2026, 3, 1, tzinfo=timezone.utc), 2.0, 5000.0)
    start = datetime(2026, 3, 28, 12, tzinfo=timezone.utc)  # Paris changes to summer time on 29 March
    times = [start + timedelta(days=d) for d in range(3)]
    assert list(planned_signals(times, "", account, PARIS)["hour"]) == [13, 14, 14]
