"""`scorer score`: score files and folders into one report, leaving the inputs untouched."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from scorer.config import require_writable_dir
from scorer.context.features import zone
from scorer.context.plan import find_plans
from scorer.errors import ConfigError
from scorer.report.workbook import ReportContent, report_name, save_report
from scorer.results import BatchResult, Rejected
from scorer.scoring.engine import Engine, Item, Progress, open_engine
from scorer.scoring.vet import find_candidates
from scorer.settings import Settings


@dataclass(frozen=True)
class ScoreRun:
    """The outcome of one `scorer score`."""

    report: Path
    result: BatchResult


def collect_items(paths: Sequence[Path], tz: ZoneInfo) -> tuple[list[Item], list[Rejected]]:
    """Expand files and folders into items named relative to the folder they were found in, with their plans.

    A sidecar that cannot be read is returned as rejected; its creative is scored image-only, with a note.
    """
    found: list[tuple[Path, str, Path]] = []
    for given in paths:
        if not given.exists() and not given.is_symlink():
            raise ConfigError(f"{given} does not exist: check the path")
        for path in find_candidates([given]):
            inside = given.is_dir() and path != given
            found.append((path, path.relative_to(given).as_posix() if inside else path.name,
                          given if inside else path.parent))
    unique: dict[Path, tuple[str, Path]] = {}
    for path, name, root in found:  # a file given twice, or inside two given folders, is scored once
        unique.setdefault(path, (name, root))
    plans = find_plans([(path, root) for path, (_, root) in unique.items()], tz)
    items = [Item(path, name, plan=plans.found.get(path), plan_note=plans.notes.get(path, ""))
             for path, (name, _) in unique.items()]
    rejected = [Rejected(sidecar.name, str(sidecar), reason) for sidecar, reason in plans.rejected]
    return items, rejected


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
    items, bad_plans = collect_items(paths, zone(settings.context.timezone))
    if not items:
        raise ConfigError(f"no files found in {', '.join(map(str, paths))}: give image files or folders that hold them")
    own = engine is None
    engine = engine or open_engine(settings, largest_batch=len(items))
    try:
        on_start(len(items))
        result = engine.score(items, progress=progress)
        result.rejected += bad_plans
    finally:
        if own:
            engine.close()
    content = ReportContent(result, engine.model.info, settings.report)
    report = save_report(outbox / report_name(datetime.now()), content)
    return ScoreRun(report, result)
