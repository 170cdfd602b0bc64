"""A creative's planned posting time and caption: a sidecar `<name>.txt` / `<name>.json` beside it, or a plan.csv row.

    banner.jpg    the creative
    banner.txt    first line `posted_at: 2026-12-03 18:00` (optional), the rest is the caption
    banner.json   {"posted_at": "2026-12-03T18:00", "caption": "New colours #spring"}
    plan.csv      columns file, posted_at, caption; in the creative's folder or the scored folder (inbox)

These files are never scored as images. A time without an offset is taken in context.timezone.
A sidecar that cannot be read is rejected with its reason, and its creative is scored image-only.
A sidecar belongs to the files beside it with its stem (`creatives_beside`); one that has none is
an orphan, which `scorer watch` rejects in time (watch.orphan_hours) and `scorer score` lists.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from scorer.errors import ContextError
from scorer.fsutil import NotRegularFile, open_regular

log = logging.getLogger(__name__)

PLAN_CSV = "plan.csv"
SIDECAR_SUFFIXES = (".json", ".txt")
_MAX_BYTES = 2**20
# Only `posted_at:` marks a time: a caption may well begin with "Time: to shine".
_TIME_LINE = re.compile(r"^\s*posted_at\s*:\s*(.*?)\s*$", re.IGNORECASE)


def is_context_name(name: str) -> bool:
    """Whether a file name is a sidecar or a plan (never scored as an image)."""
    return is_plan_name(name) or is_sidecar_name(name)


def is_plan_name(name: str) -> bool:
    """Whether a file name is a plan.csv, in any case (it stays for the creatives to come)."""
    return name.casefold() == PLAN_CSV


def is_sidecar_name(name: str) -> bool:
    """Whether a file name is a sidecar's (`.txt`, `.json`, in any case)."""
    return name.casefold().endswith(SIDECAR_SUFFIXES)


@dataclass(frozen=True)
class Plan:
    """A creative's planned post: when (None when not said) and its caption, and where that came from."""

    posted_at: datetime | None
    caption: str
    source: str


@dataclass
class Plans:
    """The plans found for a set of creatives, the sidecars read, and those that were rejected (path, reason)."""

    found: dict[Path, Plan] = field(default_factory=dict)
    notes: dict[Path, str] = field(default_factory=dict)
    rejected: list[tuple[Path, str]] = field(default_factory=list)
    read: list[Path] = field(default_factory=list)


def parse_time(text: str, tz: ZoneInfo, where: str) -> datetime:
    """A planned time, aware; without an offset it is taken in `tz`."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ContextError(f"{where}: the time {text.strip()!r} is not a date and time: write it as "
                           f"2026-12-03 18:00 (taken in context.timezone, {tz.key}) or 2026-12-03T18:00+01:00"
                           ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=tz)


def sidecar_of(creative: Path) -> Path | None:
    """The sidecar beside a creative (`<stem>.json`, else `<stem>.txt`), if there is one."""
    for suffix in SIDECAR_SUFFIXES:
        path = creative.with_suffix(suffix)
        if path != creative and path.is_file() and not path.is_symlink():
            return path
    return None


def creatives_beside(sidecar: Path) -> list[Path]:
    """The files beside a sidecar that `sidecar_of` would find it for: its stem with any suffix, or none.

    A creative still arriving under a temporary name (`banner.part`) counts: the sidecar waits for it.
    """
    if sidecar.suffix not in SIDECAR_SUFFIXES:
        return []  # `sidecar_of` looks for lower-case suffixes only: no creative ever reads this one
    try:
        with os.scandir(sidecar.parent) as entries:
            return sorted(sidecar.parent / e.name for e in entries if Path(e.name).stem == sidecar.stem
                          and not is_context_name(e.name) and not e.is_dir(follow_symlinks=False))
    except OSError:
        return []


def read_sidecar(path: Path, tz: ZoneInfo) -> Plan:
    """Read a `.txt` or `.json` sidecar."""
    text = _read_text(path)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ContextError(f"{path.name} is not valid JSON ({exc.msg}, line {exc.lineno}): write "
                               '{"posted_at": "2026-12-03 18:00", "caption": "..."}') from None
        if not isinstance(data, dict):
            raise ContextError(f'{path.name} must hold one object: {{"posted_at": "...", "caption": "..."}}')
        stamp = data.get("posted_at")
        when = parse_time(str(stamp), tz, path.name) if stamp not in (None, "") else None
        return Plan(when, str(data.get("caption") or ""), path.name)
    lines = text.splitlines()
    match = _TIME_LINE.match(lines[0]) if lines else None
    when = parse_time(match.group(1), tz, path.name) if match else None
    return Plan(when, "\n".join(lines[1:] if match else lines).strip(), path.name)


def _read_text(path: Path) -> str:
    try:
        with open_regular(path) as handle:
            data = handle.read(_MAX_BYTES + 1)
    except (OSError, NotRegularFile) as exc:
        raise ContextError(f"{path.name} cannot be read ({exc}): drop it again as a plain file") from None
    if len(data) > _MAX_BYTES:
        raise ContextError(f"{path.name} is over 1 MB: a sidecar holds one time and one caption")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ContextError(f"{path.name} is not UTF-8 text: save it as UTF-8") from None


def read_plan_csv(path: Path, tz: ZoneInfo) -> dict[str, Plan]:
    """The rows of a plan.csv by file name; a row whose time is unreadable has its reason as source, after a `!`."""
    plans: dict[str, Plan] = {}
    for number, raw in enumerate(csv.DictReader(io.StringIO(_read_text(path))), start=2):
        row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not row.get("file"):
            log.warning("%s line %d has no file name: the header needs file, posted_at, caption", path, number)
            continue
        where = f"{path.name} line {number}"
        try:
            when = parse_time(row["posted_at"], tz, where) if row.get("posted_at") else None
        except ContextError as exc:
            plans[row["file"]] = Plan(None, row.get("caption", ""), f"!{exc}")
            continue
        plans[row["file"]] = Plan(when, row.get("caption", ""), where)
    return plans


def find_plans(creatives: Sequence[tuple[Path, Path]], tz: ZoneInfo) -> Plans:
    """The plan of each creative, given as (path, the folder it was found in): its sidecar, else a plan.csv row."""
    out = Plans()
    tables: dict[Path, dict[str, Plan]] = {}
    for path, root in creatives:
        sidecar = sidecar_of(path)
        if sidecar is not None:
            try:
                out.found[path] = read_sidecar(sidecar, tz)
                out.read.append(sidecar)
            except ContextError as exc:
                out.rejected.append((sidecar, str(exc)))
                out.notes[path] = f"image-only: its sidecar {sidecar.name} was rejected (see the Rejected sheet)"
            continue
        for folder in dict.fromkeys((path.parent, root)):
            plan = _plan_row(folder, path, tables, tz)
            if plan is None:
                continue
            if plan.source.startswith("!"):
                out.notes[path] = f"image-only: {plan.source[1:]}"
            else:
                out.found[path] = plan
            break
    return out


def _plan_row(folder: Path, path: Path, tables: dict[Path, dict[str, Plan]], tz: ZoneInfo) -> Plan | None:
    csv_path = folder / PLAN_CSV
    if folder not in tables:
        try:
            tables[folder] = read_plan_csv(csv_path, tz) if csv_path.is_file() else {}
        except ContextError as exc:
            log.warning("%s is not used: %s", csv_path, exc)
            tables[folder] = {}
    rows = tables[folder]
    try:
        relative = path.relative_to(folder).as_posix()
    except ValueError:
        return None
    return rows.get(relative) or rows.get(path.name)
