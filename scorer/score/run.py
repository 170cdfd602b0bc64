"""`scorer score`: score files and folders into one report, leaving the inputs untouched."""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from scorer.config import require_writable_dir
from scorer.context.plan import SIDECAR_SUFFIXES, Plans, creatives_beside, find_plans, is_sidecar_name, sidecar_of
from scorer.context.signals import zone
from scorer.decoding.vet import find_candidates, is_creative_name
from scorer.errors import ConfigError
from scorer.report.workbook import ReportContent, report_name, save_report
from scorer.results import BatchResult, Progress, Rejected
from scorer.scoring.assembly import open_engine
from scorer.scoring.engine import Engine, Item
from scorer.settings import Settings
from scorer.textsafe import log_text

# Each file found: the name reports show (its path relative to the folder it was found in), and that folder.
Found = dict[Path, tuple[str, Path]]


@dataclass(frozen=True)
class Sidecars:
    """The sidecars `scorer score` came across: the names of those it read, and (name, why) of those it did not."""

    read: list[str]
    unused: list[tuple[str, str]]

    def lines(self) -> list[str]:
        """The printed summary, in plain words: the sidecars read on one line, then one line for each one not used."""
        lines = []
        if self.read:
            lines.append(f"Posting time and caption read from {_files(len(self.read))} beside their creatives: "
                         + ", ".join(self.read))
        if self.unused:
            lines.append(f"{_files(len(self.unused))} not used (not images, and not read as a creative's posting "
                         "time and caption):")
            lines += [f"  {name}: {why}" for name, why in self.unused]
        return [log_text(line) for line in lines]  # file names are untrusted: no control character reaches a terminal


def _files(n: int) -> str:
    return "1 .txt/.json file" if n == 1 else f"{n} .txt/.json files"


@dataclass(frozen=True)
class ScoreRun:
    """The outcome of one `scorer score`."""

    report: Path
    result: BatchResult
    sidecars: Sidecars


def collect_items(paths: Sequence[Path], tz: ZoneInfo) -> tuple[list[Item], list[Rejected], Sidecars]:
    """Expand files and folders into items named relative to the folder they were found in, with their plans.

    A sidecar that cannot be read is returned as rejected; its creative is scored image-only, with a note.
    """
    unique = _found(paths, is_creative_name)
    plans = find_plans([(path, root) for path, (_, root) in unique.items()], tz)
    items = [Item(path, name).planned(plans) for path, (name, _) in unique.items()]
    rejected = [Rejected(sidecar.name, str(sidecar), reason) for sidecar, reason in plans.rejected]
    return items, rejected, _sidecars(paths, unique, plans)


def _found(paths: Sequence[Path], wanted: Callable[[str], bool]) -> Found:
    found: Found = {}
    for given in paths:
        if not given.exists() and not given.is_symlink():
            raise ConfigError(f"{given} does not exist: check the path")
        for path in find_candidates([given], wanted):
            inside = given.is_dir() and path != given
            # a file given twice, or inside two given folders, is taken once
            found.setdefault(path, (path.relative_to(given).as_posix() if inside else path.name,
                                    given if inside else path.parent))
    return found


def _sidecars(paths: Sequence[Path], creatives: Found, plans: Plans) -> Sidecars:
    """The sidecars among and under `paths` or beside the creatives: which were read, and why the others were not."""
    seen = _found(paths, is_sidecar_name)
    for creative, (_, root) in creatives.items():
        for suffix in SIDECAR_SUFFIXES:
            sidecar = creative.with_suffix(suffix)
            if sidecar != creative and sidecar.is_file():
                seen.setdefault(sidecar, (sidecar.relative_to(root).as_posix(), root))
    rejected, read = {path for path, _ in plans.rejected}, set(plans.read)
    # a rejected sidecar's reason is printed with the other rejected files: not twice
    unused = [(name, _REJECTED if path in rejected else _unused(path, creatives)) for path, (name, _) in seen.items()
              if path not in read]
    return Sidecars([seen[path][0] for path in plans.read], unused)


_REJECTED = "rejected, its reason listed with the rejected files: its creative is scored on its image alone"


def _unused(sidecar: Path, creatives: Collection[Path]) -> str:
    beside = creatives_beside(sidecar)
    scored = [c for c in beside if c in creatives]
    if scored:
        chosen = sidecar_of(scored[0])
        return f"{chosen.name} beside {scored[0].name} is read instead" if chosen else "a symbolic link: not followed"
    if beside:
        return f"its creative {beside[0].name} was not among the files scored"
    return f"no creative named {sidecar.stem}.* beside it"


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
    items, bad_plans, sidecars = collect_items(paths, zone(settings.context.timezone))
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
    content = ReportContent(result, engine.info, settings.report)
    report = save_report(outbox / report_name(datetime.now()), content)
    return ScoreRun(report, result, sidecars)
