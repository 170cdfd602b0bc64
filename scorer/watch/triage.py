"""Triage: which settled files a batch scores, and which it decides without scoring.

Known content becomes a duplicate, a file that crashed the service too often is rejected, a sidecar
without its creative waits (watch.orphan_hours) and is then rejected, and each creative gets its plan.
Files that were being scored when the service died are scored one at a time.
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from scorer.context.plan import creatives_beside, find_plans, is_sidecar_name
from scorer.context.signals import zone
from scorer.fsutil import sha256_regular
from scorer.ledger.schema import Candidate, Entry
from scorer.ledger.store import Ledger
from scorer.results import Progress, Scored
from scorer.settings import Settings

log = logging.getLogger(__name__)


class Triage:
    """Sorts a batch's paths into decided entries and chunks to score, against the ledger."""

    def __init__(self, settings: Settings, ledger: Ledger) -> None:
        self.settings = settings
        self.ledger = ledger

    def orphaned(self, sidecar: Path) -> str | None:
        """Why a sidecar is rejected; None while a creative is beside it, or for watch.orphan_hours after it came.

        One that came after its creative was scored waits too: a sidecar may come before its creative,
        and the same name may be dropped again with a new one.
        """
        hours = self.settings.watch.orphan_hours
        try:
            # ctime: set when the file arrived (a copy or a move), kept across restarts, never carried over by cp -p
            young = time.time() - os.lstat(sidecar).st_ctime < hours * 3600
        except OSError:
            return None  # gone: nothing to decide
        if young or creatives_beside(sidecar):
            return None
        scored = self.ledger.scored_as(sidecar.with_suffix(""))
        if scored is not None:
            return (f"{sidecar.name} came after its creative {scored.name} was already scored at {when(scored)}, "
                    "so its time and caption were not used: drop a sidecar before its creative, or with it")
        return (f"no creative named {sidecar.stem}.* arrived beside {sidecar.name} within {hours:g} h "
                "(watch.orphan_hours): a sidecar holds the planned time and caption of the creative with its name; "
                "drop them together")

    def split(self, paths: Sequence[Path], progress: Progress) -> tuple[list[Entry], list[list[Candidate]]]:
        """Decide what needs no scoring; split the rest into chunks to score."""
        entries: list[Entry] = []
        fresh: list[Candidate] = []
        suspects: list[Candidate] = []
        for path in paths:
            candidate = self.identify(path)
            progress(0)  # hashing a batch of large files takes a while: keep the watchdog fed
            if candidate is None:
                continue
            sha = candidate.sha
            if sha is not None and self.ledger.in_place(sha, candidate.path):
                continue  # kept in place by design, or waiting for its move: decided already
            if is_sidecar_name(path.name):  # released by intake as an orphan; its creative may have come since
                if (reason := self.orphaned(path)) is not None:
                    entries.append(Entry(candidate, "rejected", reason=reason))
                continue
            earlier = self.ledger.earlier(sha) if sha else None
            tries = self.ledger.attempts(sha) if sha else 0
            if earlier is not None:
                entries.append(duplicate(candidate, earlier))
            elif tries >= self.settings.watch.max_attempts:
                entries.append(Entry(candidate, "rejected", reason=(
                    f"the service stopped {tries} times while scoring it (watch.max_attempts): not scored "
                    "again; check the file, then drop it in again")))
            else:
                (suspects if tries else fresh).append(candidate)
        fresh, suspects = self._with_plans(fresh, suspects, entries)
        # A file that was in flight when the service died is scored on its own: if it kills the
        # service again, only its own count rises, and it alone is rejected at max_attempts.
        if suspects:
            log.warning("%d files were being scored when the service died: scoring them one at a time",
                        len(suspects))
        return entries, ([fresh] if fresh else []) + [[s] for s in suspects]

    def _with_plans(self, fresh: list[Candidate], suspects: list[Candidate], entries: list[Entry]
                    ) -> tuple[list[Candidate], list[Candidate]]:
        """Each creative's planned time and caption; a sidecar that cannot be read becomes a rejected entry."""
        tz = zone(self.settings.context.timezone)
        plans = find_plans([(c.path, self.settings.inbox) for c in fresh + suspects], tz)
        for sidecar, reason in plans.rejected:
            candidate = self.identify(sidecar)
            if candidate is not None:
                entries.append(Entry(candidate, "rejected", reason=reason))
        return [c.planned(plans) for c in fresh], [c.planned(plans) for c in suspects]

    def identify(self, path: Path) -> Candidate | None:
        """The file as intake found it, with its SHA-256 (None when it cannot be read); None when it is gone."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        name = path.relative_to(self.settings.inbox).as_posix()
        limit = max(self.settings.images.max_file_mb, self.settings.video.max_file_mb) * 2**20  # a still's or a video's
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            # Rejected unread by the decoder; reading a pipe would block, a huge file is wasted time.
            return Candidate(path, name, None, st.st_size, st.st_mtime_ns)
        # None when it cannot be read: the decoder rejects it with the reason.
        return Candidate(path, name, sha256_regular(path), st.st_size, st.st_mtime_ns)


def duplicate(candidate: Candidate, original: Scored) -> Entry:
    """A file whose content was scored before (or earlier in its batch), with the reason it is not scored again."""
    if not original.report:
        reason = f"same content as {original.name} in this batch: listed once"
    else:
        reason = f"same content as {original.name}, scored {when(original)}: not scored again"
    return Entry(candidate, "duplicate", original=original, reason=reason)


def when(scored: Scored) -> str:
    """When and into which report a creative was scored, for a marketer."""
    return f"{datetime.fromtimestamp(scored.scored_at):%Y-%m-%d %H:%M} (report {Path(scored.report).name})"
