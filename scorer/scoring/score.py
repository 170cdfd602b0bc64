"""`scorer score`: score files and folders into one report, leaving the inputs untouched."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from scorer.config import require_writable_dir
from scorer.errors import ConfigError
from scorer.report.workbook import ReportContent, report_name, save_report
from scorer.results import BatchResult
from scorer.scoring.engine import Engine, Item, Progress, open_engine
from scorer.scoring.vet import find_candidates
from scorer.settings import Settings


@dataclass(frozen=True)
class ScoreRun:
    """The outcome of one `scorer score`."""

    report: Path
    result: BatchResult


def collect_items(paths: Sequence[Path]) -> list[Item]:
    """Expand files and folders into items named relative to the folder they were found in."""
    items: list[Item] = []
    for given in paths:
        if not given.exists() and not given.is_symlink():
            raise ConfigError(f"{given} does not exist: check the path")
        for path in find_candidates([given]):
            name = path.relative_to(given).as_posix() if given.is_dir() and path != given else path.name
            items.append(Item(path, name))
    unique: dict[Path, Item] = {}
    for item in items:  # a file given twice, or inside two given folders, is scored once
        unique.setdefault(item.path, item)
    return list(unique.values())


def score_paths(
    settings: Settings,
    paths: Sequence[Path],
    *,
    engine: Engine | None = None,
    progress: Progress = lambda n: None,
    on_start: Callable[[int], None] = lambda total: None,
    create_outbox: bool = False,
) -> ScoreRun:
    """Score every file under `paths` and write one report to the outbox.

    `create_outbox` creates it first: for a folder named on the command line (--out), never for
    the configured one, where a missing share must not quietly become a local folder.
    """
    if create_outbox:
        try:
            settings.outbox.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {settings.outbox} ({exc.strerror}): give --out a folder you can write"
                              ) from None
    outbox = require_writable_dir(settings.outbox, "outbox")
    items = collect_items(paths)
    if not items:
        raise ConfigError(f"no files found in {', '.join(map(str, paths))}: give image files or folders that hold them")
    own = engine is None
    engine = engine or open_engine(settings, largest_batch=len(items))
    try:
        on_start(len(items))
        result = engine.score(items, progress=progress)
    finally:
        if own:
            engine.close()
    content = ReportContent(result, engine.model.info, settings.report)
    report = save_report(outbox / report_name(datetime.now()), content)
    return ScoreRun(report, result)
