"""What was scored, so that a restart never rescores or loses a file.

The ledger is a SQLite database in the `state` folder and the source of truth of the
watch service; every report is rebuilt from it. Content is identified by its SHA-256.

    batches  one per report: pending (outcomes recorded) -> reported (workbook written)
    files    one per inbox file decided: its decision, everything a report row needs,
             and where the file goes (done once it is there)
    attempts files whose scoring was under way when the service died, and how often
    meta     small facts, such as which batch latest.xlsx last included, and each model's track record

A batch's outcomes and its report name are written in one transaction, so after a
crash a batch is either wholly recorded or not at all.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scorer.errors import ServiceError
from scorer.ledger.outcome_tables import Launches
from scorer.ledger.schema import (
    LEDGER_NAME,
    MIGRATIONS,
    OUTCOMES_SCHEMA,
    SCHEMA,
    SCORED_COLUMNS,
    VERSION,
    Candidate,
    Entry,
    file_row,
    meta_value,
    model_from_json,
    model_json,
    scored_from_row,
    set_meta,
)
from scorer.results import BatchResult, Duplicate, ModelInfo, Rejected, Scored
from scorer.sqlitetx import immediate


@dataclass(frozen=True)
class Disposal:
    """A recorded file that still has to reach its destination: its row's id and its Entry, read back for the move."""

    id: int
    entry: Entry

    @property
    def destination(self) -> Path:
        """Where the file goes: every pending file has one (a file kept in place is done once recorded)."""
        assert self.entry.destination is not None, f"file {self.id} is pending with nowhere to go"
        return self.entry.destination


class Ledger:
    """The watch service's SQLite ledger; use from one thread. Its `launches` share its connection."""

    def __init__(self, state: Path) -> None:
        self.path = state / LEDGER_NAME
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            # WAL + FULL: a committed batch survives a power cut, and readers never see half of one.
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                self._db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} {OUTCOMES_SCHEMA} "
                                       f"PRAGMA user_version={VERSION}; COMMIT;")
            elif version < VERSION:  # an older ledger gains the newer tables and names; no row changes
                steps = " ".join(MIGRATIONS[v] for v in range(version, VERSION))
                self._db.executescript(f"BEGIN IMMEDIATE; {steps} PRAGMA user_version={VERSION}; COMMIT;")
        except sqlite3.DatabaseError as exc:
            fix = ("move the damaged file away to start a fresh ledger" if "not a database" in str(exc)
                   else "check that the state folder exists, is writable and is on a local disk")
            raise ServiceError(f"ledger {self.path} cannot be opened ({exc}): {fix}") from None
        if version > VERSION:
            raise ServiceError(f"ledger {self.path} was written by a newer scorer: upgrade this one")
        self.launches = Launches(self._db)  # the outcome tables (scorer outcomes), in this ledger's transactions

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """One consistent read of the ledger, for long reads on a second Ledger (scorer.ledger.latest_window).

        In WAL mode a reader never blocks the writer, so batches go on being recorded meanwhile.
        """
        self._db.execute("BEGIN DEFERRED")
        try:
            yield self._db
        finally:
            self._db.execute("COMMIT")

    # Intake: what is already decided.

    def known_here(self, path: Path, size: int, mtime_ns: int) -> bool:
        """Whether this very file (path, size, mtime) was recorded and belongs there, so a rescan can skip it unread."""
        row = self._db.execute(
            "SELECT 1 FROM files WHERE path = ? AND size = ? AND mtime_ns = ? AND (done = 0 OR (done = 1 AND "
            "destination IS NULL)) LIMIT 1",
            (str(path), size, mtime_ns),
        ).fetchone()
        return row is not None

    def in_place(self, sha: str, path: Path) -> bool:
        """Whether this content was recorded from this path and is meant to be there (kept, or not yet moved)."""
        row = self._db.execute(
            "SELECT 1 FROM files WHERE sha = ? AND path = ? AND (done = 0 OR (done = 1 AND destination IS NULL)) "
            "LIMIT 1",
            (sha, str(path)),
        ).fetchone()
        return row is not None

    def earlier(self, sha: str) -> Scored | None:
        """The first scored result for this content, if it was ever scored."""
        row = self._db.execute(
            f"SELECT {SCORED_COLUMNS} FROM files JOIN batches ON batches.id = files.batch "
            "WHERE sha = ? AND decision = 'scored' ORDER BY files.id LIMIT 1",
            (sha,),
        ).fetchone()
        return scored_from_row(row) if row else None

    def scored_as(self, stem: Path) -> Scored | None:
        """The newest scored file that was at `stem` with one suffix (or none) in the inbox: a sidecar's creative."""
        base = str(stem)
        # Paths that start with "<stem>." sort from "<stem>." up to "<stem>/": the path index serves the range.
        rows = self._db.execute(
            f"SELECT {SCORED_COLUMNS}, files.path FROM files JOIN batches ON batches.id = files.batch WHERE "
            "decision = 'scored' AND (files.path = ? OR (files.path >= ? AND files.path < ?)) ORDER BY files.id DESC",
            (base, base + ".", base + "/"),
        ).fetchall()
        return next((scored_from_row(row[:-1]) for row in rows if Path(row[-1]).with_suffix("") == stem), None)

    # Attempts: files in flight when the service died.

    def attempts(self, sha: str) -> int:
        """How often the service died while this content was being scored."""
        row = self._db.execute("SELECT count FROM attempts WHERE sha = ?", (sha,)).fetchone()
        return int(row[0]) if row else 0

    def begin_attempt(self, shas: Iterable[str]) -> None:
        """Count an attempt for each file before scoring it; `end_attempt` takes it back if nothing crashed."""
        with immediate(self._db):
            self._db.executemany(
                "INSERT INTO attempts (sha, count) VALUES (?, 1) ON CONFLICT(sha) DO UPDATE SET count = count + 1",
                [(s,) for s in set(shas)],
            )

    def end_attempt(self, shas: Iterable[str]) -> None:
        """Scoring these files finished (or was abandoned on purpose): that attempt did not crash."""
        with immediate(self._db):
            rows = [(s,) for s in set(shas)]
            self._db.executemany("UPDATE attempts SET count = count - 1 WHERE sha = ?", rows)
            self._db.execute("DELETE FROM attempts WHERE count <= 0")

    # Batches.

    def write_batch(self, entries: Sequence[Entry], info: ModelInfo,
                    report_for: Callable[[int], Path]) -> tuple[int, Path]:
        """Write a batch's decisions and its report's path in one transaction; return (batch id, report path)."""
        now = time.time()
        with immediate(self._db):
            cur = self._db.execute(
                "INSERT INTO batches (state, report, model, created) VALUES ('pending', '', ?, ?)",
                (model_json(info), now),
            )
            batch = int(cur.lastrowid or 0)
            report = report_for(batch)
            self._db.execute("UPDATE batches SET report = ? WHERE id = ?", (str(report), batch))
            self._db.executemany(
                "INSERT INTO files (sha, path, name, size, mtime_ns, decision, result, thumbnail, reason, batch, "
                "destination, done) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [file_row(e, batch) for e in entries],
            )
            # A decided file is no longer in flight, whatever its attempts were.
            self._db.executemany("DELETE FROM attempts WHERE sha = ?", [(e.sha,) for e in entries if e.sha])
            self._db.executemany(
                "INSERT OR IGNORE INTO likeness (sha, prints, embedding, model) VALUES (?, ?, ?, ?)",
                [(e.scored.sha256, e.scored.prints, e.scored.embedding, info.sha256) for e in entries
                 if e.scored is not None and e.scored.prints is not None],
            )
        return batch, report

    def unreported(self) -> list[tuple[int, Path]]:
        """Recorded batches whose report may not have been written yet, oldest first."""
        rows = self._db.execute("SELECT id, report FROM batches WHERE state = 'pending' ORDER BY id").fetchall()
        return [(int(i), Path(r)) for i, r in rows]

    def mark_reported(self, batch: int) -> None:
        """The batch's report is on disk."""
        with immediate(self._db):
            self._db.execute("UPDATE batches SET state = 'reported' WHERE id = ?", (batch,))

    def batch_model(self, batch: int) -> ModelInfo:
        """The model that scored a batch."""
        (text,) = self._db.execute("SELECT model FROM batches WHERE id = ?", (batch,)).fetchone()
        return model_from_json(text)

    def last_batch(self) -> int:
        """The newest batch's id, 0 when there is none."""
        return int(self._db.execute("SELECT coalesce(max(id), 0) FROM batches").fetchone()[0])

    def batch_result(self, batch: int) -> BatchResult:
        """The rows of one batch's report."""
        return self._result("files.batch = ?", (batch,))

    def _result(self, where: str, args: tuple[Any, ...]) -> BatchResult:
        rows = self._db.execute(
            f"SELECT decision, reason, {SCORED_COLUMNS} FROM files JOIN batches ON batches.id = files.batch "
            f"WHERE {where} ORDER BY files.id",
            args,
        ).fetchall()
        result = BatchResult()
        for decision, reason, *scored in rows:
            name, location, sha = scored[0], scored[1], scored[2]
            if decision == "scored":
                result.scored.append(scored_from_row(scored))
            elif decision == "rejected":
                result.rejected.append(Rejected(name, location, reason or "", sha or ""))
            else:
                original = self.earlier(sha)
                assert original is not None, f"duplicate {name} of content that was never scored"
                result.duplicates.append(Duplicate(name, location, original))
        return result

    # Disposals: decided files on their way out of the inbox.

    def undisposed(self) -> list[Disposal]:
        """Recorded files not yet at their destination, oldest first."""
        rows = self._db.execute(
            "SELECT id, path, name, sha, size, mtime_ns, decision, reason, destination FROM files WHERE done = 0 "
            "ORDER BY id"
        ).fetchall()
        # A move needs the file as intake saw it and the content decided, not its result. The row keeps one
        # SHA-256, the content decided, and it stands as the candidate's.
        return [Disposal(i, Entry(Candidate(Path(p), n, s, z, m), o, reason=r or "", destination=Path(d)))
                for i, p, n, s, z, m, o, r, d in rows]

    def mark_done(self, moved: Sequence[tuple[int, Path]]) -> None:
        """These files reached their destinations (which may differ from the chosen ones after a clash)."""
        with immediate(self._db):
            self._db.executemany(
                "UPDATE files SET done = 1, destination = ? WHERE id = ?", [(str(d), i) for i, d in moved]
            )

    def mark_replaced(self, ids: Sequence[int]) -> None:
        """The files at these paths were replaced after they were decided: the new ones stay as new input.

        done = 2 keeps the decision (and its report row) but no longer claims the inbox path, so intake
        takes up what is there now; its destination stays reserved, so the newcomer never lands under
        the name that an earlier report gave the old file.
        """
        with immediate(self._db):
            self._db.executemany("UPDATE files SET done = 2 WHERE id = ?", [(i,) for i in ids])

    def destinations(self) -> list[tuple[Path, bool]]:
        """(destination, rejected) chosen for files not yet moved, so a new choice never collides with one."""
        rows = self._db.execute(
            "SELECT destination, decision FROM files WHERE done IN (0, 2) AND destination IS NOT NULL").fetchall()
        return [(Path(d), o != "scored") for d, o in rows]

    # Meta.

    def get(self, key: str) -> str | None:
        """A value from the meta table."""
        return meta_value(self._db, key)

    def put(self, key: str, value: str) -> None:
        """Set a value in the meta table."""
        set_meta(self._db, key, value)
