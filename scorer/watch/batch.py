"""One batch's crash-safe path from inbox to outbox, and the recovery that finishes a crashed one.

Per batch, in this order:

1. score the files that need it (known content becomes a Duplicate, not a rescore);
2. record every decision, each file's destination and the report's name in ONE transaction;
3. write the report atomically under that name, then queue its notification (scorer.notify);
4. mark the batch reported;
5. move each file to its destination and mark it done.

A write that fails in steps 3-5 (a full disk, a report held open on a share) does not stop
the batch: the ledger already holds every result, so the failure is logged, shown in
STATUS= and retried with backoff by `retry`, and the intake keeps flowing meanwhile.

A kill -9 before step 2 leaves the files in the inbox to be scored again; after it, start-up
recovery repeats steps 3-5 from the ledger without rescoring. Watch reports carry the
batch id in their name, so nothing else ever writes that name and recovery can tell
whether the report exists.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from scorer.context.plan import is_sidecar_name
from scorer.fsutil import free_name, remove_temps
from scorer.ledger.schema import Candidate, Entry
from scorer.ledger.store import Ledger
from scorer.report.workbook import ReportContent, report_name, save_report
from scorer.results import BatchResult, Progress, Scored
from scorer.scoring.engine import Engine
from scorer.settings import Settings
from scorer.textsafe import log_text
from scorer.track_record import TrackRecord
from scorer.watch.backoff import WriteBackoff
from scorer.watch.disposal import dispose_pending, fitting, reason_path, reserved
from scorer.watch.triage import Triage, duplicate

log = logging.getLogger(__name__)

#: Told of each batch whose report is on disk: its id, the report and its rows (scorer.notify.notices.Notices).
Announce = Callable[[int, Path, BatchResult], None]
#: Told once of a model whose track record says "no better than a guess", with that track record.
Warn = Callable[[TrackRecord], None]

# A file unreadable for a moment (EACCES, ENOENT on a share) is tried in this many batches before it is rejected.
PASSING_TRIES = 3


@dataclass(frozen=True)
class BatchSummary:
    """What one batch produced."""

    batch: int
    report: Path
    scored: int
    rejected: int
    duplicates: int
    seconds: float


class HotFolder:
    """The inbox, the outbox and the ledger that keeps them consistent."""

    def __init__(self, settings: Settings, ledger: Ledger, announce: Announce = lambda batch, report, result: None,
                 warn: Warn = lambda track: None) -> None:
        self.settings = settings
        self.ledger = ledger
        self._announce = announce
        self._warn = warn
        self._move = settings.watch.after_scoring == "move"
        self.trouble = WriteBackoff()
        self._passing: dict[Path, int] = {}
        self._warned: set[str] = set()  # models whose track record said "no better than a guess", warned of once
        self._triage = Triage(settings, ledger)

    def recover(self) -> None:
        """Finish what a crash interrupted: stale temporaries, unwritten reports, unmoved files."""
        roots = [self.settings.outbox, self.settings.archive_dir, self.settings.rejected_dir]
        try:
            for path in remove_temps(roots):
                log.info("removed %s, left by an interrupted write", log_text(str(path)))
        except OSError as exc:
            log.warning("cannot remove leftover temporaries (%s): they are removed at a later start", exc.strerror)
        for batch, report in self.ledger.unreported():
            log.info("finishing batch %d from the ledger (no rescoring): %s", batch, report)
            if not self._write_report(batch, report):
                break
        self._dispose()

    def retry(self, progress: Progress = lambda n: None) -> None:
        """Once a failed write's backoff has passed, write what is owed: reports and moves.

        (latest.xlsx has its own rebuilder, with its own retries: scorer.watch.latest_rebuild.)
        """
        if not self.trouble.due():
            return
        try:
            for batch, report in self.ledger.unreported():
                if not self._write_report(batch, report):
                    return
            if not self._dispose(progress):
                return
        except sqlite3.Error as exc:
            self.trouble.failed("the ledger", exc)
            return
        self.trouble.cleared()

    def _dispose(self, progress: Progress = lambda n: None) -> bool:
        failed = dispose_pending(self.ledger, self.settings, progress)
        if failed is not None:
            self.trouble.failed("moved files", failed)
        return failed is None

    def already_decided(self, path: Path, st: os.stat_result) -> bool:
        """Whether this exact file is in the ledger already, so intake need not read it again."""
        return self.ledger.known_here(path, st.st_size, st.st_mtime_ns)

    def waits(self, path: Path, st: os.stat_result) -> bool:
        """Whether intake leaves this file for now: decided already, or a sidecar whose creative may still come."""
        return self.already_decided(path, st) or (is_sidecar_name(path.name) and self.orphaned(path) is None)

    def orphaned(self, sidecar: Path) -> str | None:
        """Why a sidecar is rejected, or None while it may still wait (see Triage.orphaned)."""
        return self._triage.orphaned(sidecar)

    def process(self, paths: Sequence[Path], engine: Engine, *, stop: Callable[[], bool],
                progress: Progress = lambda n: None) -> BatchSummary | None:
        """Take settled files through all five steps; None if nothing was decided or `stop` abandoned it."""
        started = time.monotonic()
        log.info("scoring a batch of %d files", len(paths))
        entries, chunks = self._triage.split(paths, progress)
        result = self._score_chunks(chunks, engine, stop, progress)
        if result is None:
            log.info("batch abandoned on request: %d files stay in the inbox", len(paths))
            return None
        entries = self._place(entries + _entries(chunks, self._passing_errors(result)))
        if not entries:
            return None
        now = datetime.now()
        batch, report = self.ledger.write_batch(
            entries, engine.info, lambda n: self.settings.outbox / report_name(now, f"-batch{n}"))
        log.debug("batch %d recorded (%d files): writing %s", batch, len(entries), report)
        progress(0)
        if self._write_report(batch, report):
            log.debug("batch %d reported: moving its files", batch)
        progress(0)
        self._dispose(progress)
        counts = {k: sum(e.decision == k for e in entries) for k in ("scored", "rejected", "duplicate")}
        summary = BatchSummary(batch, report, counts["scored"], counts["rejected"], counts["duplicate"],
                               time.monotonic() - started)
        log.info("batch %d: %d scored, %d rejected, %d duplicates in %.1f s: %s", batch, summary.scored,
                 summary.rejected, summary.duplicates, summary.seconds, report)
        return summary

    def _score_chunks(self, chunks: list[list[Candidate]], engine: Engine, stop: Callable[[], bool],
                      progress: Progress) -> BatchResult | None:
        result = BatchResult()

        def known(sha: str) -> Scored | None:
            # earlier chunks of this batch are not in the ledger yet
            return self.ledger.earlier(sha) or next((s for s in result.scored if s.sha256 == sha), None)

        for chunk in chunks:
            shas = [c.sha for c in chunk if c.sha]
            self.ledger.begin_attempt(shas)
            part = engine.score(chunk, known=known, progress=progress, stop=stop)
            # Abandoning on request is not a crash: the attempt is taken back either way.
            self.ledger.end_attempt(shas)
            if stop():
                return None
            result.scored += part.scored
            result.rejected += part.rejected
            result.duplicates += part.duplicates
        return result

    def _place(self, entries: list[Entry]) -> list[Entry]:
        """Choose each file's destination now, so the ledger knows it before anything moves."""
        if not self._move:
            return entries
        taken = reserved(self.ledger.destinations())
        day = f"{datetime.now():%Y-%m-%d}"
        placed = []
        for e in entries:
            scored = e.decision == "scored"
            name = e.candidate.name
            wanted = self.settings.archive_dir / day / name if scored else self.settings.rejected_dir / name
            # A reason file is reserved with its file, so `x.jpg.reason.txt` dropped beside `x.jpg` keeps its name.
            # A rejected file's name leaves room for its `.reason.txt`; a scored one keeps its name.
            destination = free_name(wanted if scored else fitting(wanted), taken, None if scored else reason_path)
            taken |= reserved([(destination, not scored)])
            placed.append(dataclasses.replace(e, destination=destination))
        return placed

    def track_record(self, model: str) -> TrackRecord | None:
        """A model's track record (scorer outcomes) for its reports; the first "no better than a guess" is logged."""
        track = self.ledger.launches.track_record(model)
        if track is not None and track.no_better_than_guess and model not in self._warned:
            self._warned.add(model)
            log.warning("the track record of model %s… on launched creatives: %s", model[:12], track.verdict)
            self._warn(track)
        return track

    def _write_report(self, batch: int, report: Path) -> bool:
        result = self.ledger.batch_result(batch)
        info = self.ledger.batch_model(batch)
        content = ReportContent(result, info, self.settings.report, self.track_record(info.sha256))
        try:
            save_report(report, content, replace=True, durable=True)
        except OSError as exc:
            self.trouble.failed(f"report {report.name}", exc)
            return False
        # Queued before the batch is marked reported: a crash in between repeats this step, and the
        # message's id makes the second queueing a no-op.
        self._announce(batch, report, result)
        self.ledger.mark_reported(batch)
        return True

    def _passing_errors(self, result: BatchResult) -> BatchResult:
        """Take out files that were unreadable for a moment, so the next rescan offers them again."""
        kept = []
        for r in result.rejected:
            path = Path(r.location)
            tries = self._passing.get(path, 0) + 1
            if r.transient and not os.path.lexists(path):
                continue  # gone: nothing to score, nothing to move
            if r.transient and tries < PASSING_TRIES:
                self._passing[path] = tries
                log.warning("%s: %s; trying again at the next scan", log_text(r.name), r.reason)
                continue
            self._passing.pop(path, None)
            kept.append(r)
        return dataclasses.replace(result, rejected=kept)


def _entries(chunks: list[list[Candidate]], result: BatchResult) -> list[Entry]:
    by_path = {str(c.path): c for chunk in chunks for c in chunk}
    # Each entry's content is what the decoder read (Entry.sha), should the file have changed since intake.
    entries = [Entry(by_path[s.location], "scored", scored=s) for s in result.scored]
    entries += [Entry(by_path[r.location], "rejected", reason=r.reason) for r in result.rejected]
    return entries + [duplicate(by_path[d.location], d.original) for d in result.duplicates]
