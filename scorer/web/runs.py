"""Scoring uploads off the event loop: one worker thread, a bounded queue, and the recent results.

The engine is not shared between threads: every job runs on the pool's single worker, so the
event loop only waits on a future and /healthz answers while a batch is being scored. That worker
runs at a lower CPU priority than the event loop, and so do the decode workers and threads it
starts (they inherit it): on a busy machine the page and /healthz answer first. A job that would
wait behind `serve.queue` others is refused at once as busy.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from scorer.errors import UploadError
from scorer.report.workbook import ReportContent, report_name, save_report
from scorer.results import BatchResult, Duplicate, Rejected, Scored
from scorer.scoring.engine import Engine
from scorer.settings import Settings
from scorer.web.uploads import Upload, keep_scored, save_uploads

log = logging.getLogger(__name__)

T = TypeVar("T")
UPLOADED = "uploaded to scorer serve"
_KEPT_RUNS = 20
NICE = 10  # how far scoring gives way to the event loop: with 0, /healthz waited up to 150 ms behind a batch


@dataclass(frozen=True)
class Run:
    """One upload's outcome: what the gallery shows and the report the button downloads."""

    id: str
    created: datetime
    result: BatchResult
    report: Path


class ScoringPool:
    """Runs blocking jobs one at a time on a worker thread; refuses more than `queue` waiting."""

    def __init__(self, queue: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer-engine",
                                            initializer=_give_way)
        self._queue = queue
        self.pending = 0  # touched only on the event loop
        self.last_error = ""
        self.last_done: float | None = None

    async def run(self, job: Callable[[], T]) -> T:
        """Run `job` on the worker and wait for it without blocking the event loop."""
        if self.pending > self._queue:
            raise UploadError(f"the scorer is busy with {self.pending} uploads: try again in a minute, "
                              "or raise serve.queue in config.yaml", status=503)
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, job)
        except Exception as exc:
            self.last_error = f"{time.strftime('%Y-%m-%d %H:%M:%S')}: {type(exc).__name__}: {exc}"
            raise
        finally:
            self.pending -= 1
            self.last_done = time.time()

    def close(self) -> None:
        """Finish the job in progress and stop the worker."""
        self._executor.shutdown(wait=True, cancel_futures=True)


def _give_way() -> None:
    """Lower the calling thread's CPU priority by NICE (per thread on Linux; what it starts inherits it)."""
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread, min(os.getpriority(os.PRIO_PROCESS, thread) + NICE, 19))
    except OSError as exc:  # where a thread id is not a process id (not Linux), scoring keeps the loop's priority
        log.info("scoring runs at the page's CPU priority: %s", exc)


class Runs:
    """The recent runs, each in its own private folder; the oldest are forgotten and deleted."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="scorer-serve-"))
        self._runs: OrderedDict[str, Run] = OrderedDict()

    def get(self, run_id: str) -> Run | None:
        """A run by its id, if it is still kept."""
        return self._runs.get(run_id)

    def score(self, engine: Engine, settings: Settings, uploads: Sequence[Upload]) -> Run:
        """Save, vet and score uploads, write their report, and keep the run (blocking: run it on the pool)."""
        run_id = secrets.token_urlsafe(12)
        folder = self.root / run_id
        folder.mkdir(mode=0o700)
        items = save_uploads(uploads, folder / "uploads")
        try:
            result = engine.score(items)
            if settings.serve.keep_uploads:
                keep_scored(result, items, settings.outbox, datetime.now().date())
        finally:
            shutil.rmtree(folder / "uploads", ignore_errors=True)
        result = _uploaded(result)
        now = datetime.now()
        report = save_report(folder / report_name(now), ReportContent(result, engine.info, settings.report))
        run = Run(run_id, now, result, report)
        self._runs[run_id] = run
        while len(self._runs) > _KEPT_RUNS:
            old, _ = self._runs.popitem(last=False)
            shutil.rmtree(self.root / old, ignore_errors=True)
        return run

    def close(self) -> None:
        """Delete every run's folder."""
        shutil.rmtree(self.root, ignore_errors=True)


def _uploaded(result: BatchResult) -> BatchResult:
    """The result with the private folder's paths replaced: they are gone, and the page must not show them."""

    def scored(s: Scored) -> Scored:
        return dataclasses.replace(s, location=UPLOADED)

    return BatchResult(
        scored=[scored(s) for s in result.scored],
        rejected=[Rejected(r.name, UPLOADED, r.reason, r.sha256) for r in result.rejected],
        duplicates=[Duplicate(d.name, UPLOADED, scored(d.original)) for d in result.duplicates],
    )
