"""The ledger: what a report row needs survives a round trip, and a batch is recorded wholly or not at all."""

from __future__ import annotations

import dataclasses
import sqlite3
import time
import typing
from pathlib import Path

import pytest

from scorer.errors import ServiceError
from scorer.ledger.schema import LEDGER_NAME, MIGRATIONS, SCHEMA, VERSION, Candidate, Entry
from scorer.ledger.store import Disposal, Ledger
from scorer.results import ModelInfo, Scored
from scorer.scoring.engine import Item

INFO = ModelInfo(path=Path("/models/m.pkl"), sha256="ab" * 32, classes=("Low", "High"), device="cpu",
                 runtime="onnxruntime", preprocessing="squish to 32×32", versions={"fastai": "2.8"},
                 card={"accuracy": 0.9})


def scored(name: str, sha: str, p_high: float = 0.7) -> Scored:
    return Scored(name=name, location=f"/in/{name}", sha256=sha, classes=("Low", "High"),
                  probs=(1 - p_high, p_high), width=640, height=480, format="JPEG", file_bytes=1234,
                  modified=1_700_000_000.0, scored_at=time.time(), thumbnail=b"\xff\xd8thumb", notes="rotated")


def entry(name: str, sha: str | None, decision: str, *, result: Scored | None = None, reason: str = "",
          destination: Path | None = None) -> Entry:
    candidate = Candidate(Path(f"/in/{name}"), name, sha, 10, 1000)
    return Entry(candidate, decision, scored=result, reason=reason, destination=destination)  # type: ignore[arg-type]


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path)
    yield led
    led.close()


def test_a_batch_round_trips_everything_its_report_shows(ledger: Ledger, tmp_path: Path) -> None:
    a = scored("a.jpg", "1" * 64)
    batch, report = ledger.write_batch(
        [entry("a.jpg", a.sha256, "scored", result=a, destination=tmp_path / "scored/a.jpg"),
         entry("bad.jpg", "2" * 64, "rejected", reason="not an image"),
         entry("copy.jpg", a.sha256, "duplicate", reason="same content as a.jpg")],
        INFO, lambda n: tmp_path / f"report-batch{n}.xlsx")
    assert (batch, report) == (1, tmp_path / "report-batch1.xlsx")

    view = ledger.batch_result(batch)
    (got,) = view.scored
    assert got.probs == a.probs and got.classes == a.classes and got.thumbnail == a.thumbnail
    assert (got.width, got.height, got.format, got.file_bytes, got.notes) == (640, 480, "JPEG", 1234, "rotated")
    assert got.location == str(tmp_path / "scored/a.jpg"), "a scored file's location is where it was moved"
    assert got.report == str(report)
    assert [(r.name, r.reason, r.location) for r in view.rejected] == [("bad.jpg", "not an image", "/in/bad.jpg")]
    (dup,) = view.duplicates
    assert (dup.name, dup.original.name, dup.original.score) == ("copy.jpg", "a.jpg", pytest.approx(70.0))
    assert ledger.batch_model(batch) == INFO
    assert ledger.earlier(a.sha256) == got
    assert ledger.earlier("2" * 64) is None, "rejected content is tried again, not called a duplicate"


def test_each_stage_of_a_files_life_holds_the_one_before_and_repeats_none_of_its_fields() -> None:
    # Item -> Candidate -> Entry -> Disposal: a stage extends the one before or holds it in a field, and adds
    # only what it learns, so that no fact about a file is kept twice (and cannot disagree with itself).
    stages = [Item, Candidate, Entry, Disposal]
    known: set[str] = set()
    for before, stage in zip(stages, stages[1:], strict=False):
        hints = typing.get_type_hints(stage)
        inherited = {f.name for f in dataclasses.fields(before)} if issubclass(stage, before) else set()
        holders = {name for name, hint in hints.items() if hint is before}
        assert inherited or len(holders) == 1, f"{stage.__name__} neither extends nor holds {before.__name__}"
        known |= {f.name for f in dataclasses.fields(before)}
        added = {f.name for f in dataclasses.fields(stage)} - inherited - holders
        assert added.isdisjoint(known), f"{stage.__name__} repeats {sorted(added & known)} of an earlier stage"
        known |= added


def test_the_content_recorded_is_what_was_decided_whatever_intake_hashed(ledger: Ledger, tmp_path: Path) -> None:
    # Intake hashed the file, then it changed before it was decoded: the ledger keeps the hash that was scored,
    # and a duplicate the hash of the content it repeats, so its report row finds that original.
    a = scored("a.jpg", "1" * 64)
    seen_first = Candidate(Path("/in/a.jpg"), "a.jpg", "9" * 64, 10, 1000)
    again = Candidate(Path("/in/b.jpg"), "b.jpg", "8" * 64, 10, 1000)
    batch, _ = ledger.write_batch(
        [Entry(seen_first, "scored", scored=a, destination=tmp_path / "a.jpg"),
         Entry(again, "duplicate", original=a, reason="same content as a.jpg in this batch: listed once",
               destination=tmp_path / "b.jpg")],
        INFO, lambda n: tmp_path / f"r{n}.xlsx")
    assert ledger.earlier(a.sha256) is not None and ledger.earlier("9" * 64) is None
    (dup,) = ledger.batch_result(batch).duplicates
    assert (dup.name, dup.original.name) == ("b.jpg", "a.jpg")
    moves = ledger.undisposed()
    assert [(d.entry.candidate.name, d.entry.sha, d.entry.decision) for d in moves] == [
        ("a.jpg", a.sha256, "scored"), ("b.jpg", a.sha256, "duplicate")]
    assert [(d.entry.candidate.size, d.entry.candidate.mtime_ns, d.entry.destination) for d in moves] == [
        (10, 1000, tmp_path / "a.jpg"), (10, 1000, tmp_path / "b.jpg")], "a move checks the file as intake saw it"


def test_reported_state_and_pending_dispositions(ledger: Ledger, tmp_path: Path) -> None:
    dest = tmp_path / "scored/a.jpg"
    a = scored("a.jpg", "1" * 64)
    batch, report = ledger.write_batch([entry("a.jpg", a.sha256, "scored", result=a, destination=dest)],
                                        INFO, lambda n: tmp_path / f"r{n}.xlsx")
    assert ledger.unreported() == [(batch, report)]
    ledger.mark_reported(batch)
    assert ledger.unreported() == []
    (pending,) = ledger.undisposed()
    assert (pending.entry.candidate.path, pending.entry.destination, pending.entry.decision) == (
        Path("/in/a.jpg"), dest, "scored")
    assert ledger.destinations() == [(dest, False)]
    assert ledger.in_place(a.sha256, Path("/in/a.jpg")), "recorded but not yet moved"
    assert ledger.known_here(Path("/in/a.jpg"), 10, 1000)
    ledger.mark_done([(pending.id, dest.with_name("a-2.jpg"))])
    assert ledger.undisposed() == [] and ledger.destinations() == []
    assert ledger.batch_result(batch).scored[0].location == str(dest.with_name("a-2.jpg"))
    assert not ledger.in_place(a.sha256, Path("/in/a.jpg")), "moved away: the same content again is a duplicate"
    assert not ledger.known_here(Path("/in/a.jpg"), 10, 1000)


def test_kept_files_stay_known_in_place(ledger: Ledger, tmp_path: Path) -> None:
    a = scored("a.jpg", "1" * 64)
    ledger.write_batch([entry("a.jpg", a.sha256, "scored", result=a)], INFO, lambda n: tmp_path / "r.xlsx")
    assert ledger.undisposed() == [], "a kept file has nowhere to go: done at once"
    assert ledger.in_place(a.sha256, Path("/in/a.jpg"))
    assert ledger.known_here(Path("/in/a.jpg"), 10, 1000)
    assert not ledger.known_here(Path("/in/a.jpg"), 10, 2000), "touched since: read it again"


def test_a_batch_is_recorded_wholly_or_not_at_all(ledger: Ledger, tmp_path: Path) -> None:
    def crash(n: int) -> Path:
        raise KeyboardInterrupt  # dies inside the transaction, after the batch row was written

    a = scored("a.jpg", "1" * 64)
    with pytest.raises(KeyboardInterrupt):
        ledger.write_batch([entry("a.jpg", a.sha256, "scored", result=a)], INFO, crash)
    assert ledger.last_batch() == 0 and ledger.earlier(a.sha256) is None and ledger.unreported() == []


def test_attempts_count_only_runs_that_died(ledger: Ledger, tmp_path: Path) -> None:
    ledger.begin_attempt(["x", "y"])
    ledger.end_attempt(["x", "y"])
    assert ledger.attempts("x") == 0, "a finished attempt is taken back"
    ledger.begin_attempt(["x"])  # ... and the service dies here
    ledger.begin_attempt(["x"])  # the restart tries again
    assert ledger.attempts("x") == 2
    ledger.end_attempt(["x"])
    assert ledger.attempts("x") == 1
    ledger.write_batch([entry("x.jpg", "x", "rejected", reason="r")], INFO, lambda n: tmp_path / "r.xlsx")
    assert ledger.attempts("x") == 0, "a decided file is no longer in flight"


def test_meta_and_a_snapshot_unmoved_by_later_batches(ledger: Ledger, tmp_path: Path) -> None:
    a = scored("a.jpg", "1" * 64)
    ledger.write_batch([entry("a.jpg", a.sha256, "scored", result=a)], INFO, lambda n: tmp_path / "r.xlsx")
    reader = Ledger(tmp_path)
    try:
        with reader.snapshot() as db:
            assert db.execute("SELECT count(*) FROM files").fetchone()[0] == 1
            b = scored("b.jpg", "2" * 64)
            ledger.write_batch([entry("b.jpg", b.sha256, "scored", result=b)], INFO, lambda n: tmp_path / "s.xlsx")
            assert db.execute("SELECT count(*) FROM files").fetchone()[0] == 1, "the writer was not blocked"
        assert reader.last_batch() == 2
    finally:
        reader.close()
    assert ledger.get("latest_batch") is None
    ledger.put("latest_batch", "1")
    ledger.put("latest_batch", "2")
    assert ledger.get("latest_batch") == "2"


def test_it_persists_across_reopening(tmp_path: Path) -> None:
    a = scored("a.jpg", "1" * 64)
    first = Ledger(tmp_path)
    first.write_batch([entry("a.jpg", a.sha256, "scored", result=a)], INFO, lambda n: tmp_path / "r.xlsx")
    first.close()
    again = Ledger(tmp_path)
    assert again.earlier(a.sha256) is not None and again.last_batch() == 1
    again.close()


def test_a_damaged_or_newer_ledger_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / LEDGER_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(ServiceError, match="move the damaged file away"):
        Ledger(tmp_path)
    newer = tmp_path / "newer"
    newer.mkdir()
    db = sqlite3.connect(newer / LEDGER_NAME)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(ServiceError, match="newer scorer: upgrade"):
        Ledger(newer)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_an_older_ledger_comes_up_current_with_every_decision_it_held(tmp_path: Path, version: int) -> None:
    # The schemas as those versions wrote them: files.outcome, and from version 2 looks (sha, prints, features, model)
    older = SCHEMA.replace("decision    TEXT NOT NULL CHECK (decision IN",
                           "outcome     TEXT NOT NULL CHECK (outcome IN")
    steps = "".join(MIGRATIONS[v] for v in range(1, version))
    with sqlite3.connect(tmp_path / LEDGER_NAME) as db:
        db.executescript(f"{older} {steps} PRAGMA user_version={version};")
        db.execute("INSERT INTO batches (id, state, report, model, created) VALUES (1, 'reported', 'r.xlsx', '{}', 0)")
        db.execute(f"INSERT INTO files (sha, path, name, {'outcome' if version < 3 else 'decision'}, reason, batch, "
                   "done) VALUES ('cd', '/in/b.jpg', 'b.jpg', 'rejected', 'not an image', 1, 1)")
        if version == 2:
            db.execute("INSERT INTO looks (sha, prints, features, model) VALUES ('cd', x'00', x'01', 'ab')")
    led = Ledger(tmp_path)
    try:
        assert [(r.name, r.reason) for r in led.batch_result(1).rejected] == [("b.jpg", "not an image")]
    finally:
        led.close()
    with sqlite3.connect(tmp_path / LEDGER_NAME) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == VERSION == 4
        assert db.execute("SELECT decision FROM files").fetchall() == [("rejected",)]
        kept = db.execute("SELECT sha, prints, embedding, model FROM likeness").fetchall()
        assert kept == ([("cd", b"\x00", b"\x01", "ab")] if version == 2 else [])
        assert db.execute("SELECT count(*) FROM outcomes").fetchone() == (0,)
        assert [column[1] for column in db.execute("PRAGMA table_info(outcomes)")][-1] == "format"
