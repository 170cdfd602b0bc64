"""Import past posts for training: a posts.csv folder or an Instaloader profile folder, into one table.

Every row that cannot be used (missing or unreadable image, a count that is not a
number, an image already seen) is counted and kept with its reason, never dropped
silently. Nothing here goes to the network: Instaloader's JSON files are read as
plain JSON.
"""

from __future__ import annotations

import json
import lzma
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from scorer.decoding.decode import decode_file
from scorer.decoding.vet import ImageLimits, is_ignored_name
from scorer.errors import DataError, ImageError

CSV_NAME = "posts.csv"
CSV_REQUIRED = ("file", "likes", "comments")
CSV_OPTIONAL = ("posted_at", "is_ad", "caption")
COLUMNS = ("image", "source", "likes", "comments", "posted_at", "is_ad", "caption", "sha256")

# Instaloader saves pictures with the extension of the server's Content-Type.
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
_TRUE = {"true", "yes", "1", "y", "t"}
_FALSE = {"false", "no", "0", "n", "f", ""}


@dataclass(frozen=True)
class BadRow:
    """One input row that was skipped, and why."""

    source: str
    reason: str


@dataclass
class Posts:
    """Imported posts, one row each, plus the rows that were skipped."""

    table: pd.DataFrame
    format: str
    bad: list[BadRow] = field(default_factory=list)


@dataclass(frozen=True)
class _Raw:
    """A post as read from its source, before its counts and image are vetted."""

    source: str
    image: Path | None
    likes: Any
    comments: Any
    posted_at: Any = None
    is_ad: Any = False
    caption: str = ""
    missing: str = ""


def import_posts(data: Path, limits: ImageLimits) -> Posts:
    """Read a posts.csv folder (or the CSV itself) or an Instaloader profile folder."""
    if data.is_file() and data.suffix.lower() == ".csv":
        return _vet(_read_csv(data), "posts.csv", limits)
    if not data.is_dir():
        raise DataError(f"{data} does not exist: give a folder with posts.csv, or an Instaloader profile folder")
    if (data / CSV_NAME).is_file():
        return _vet(_read_csv(data / CSV_NAME), "posts.csv", limits)
    raws = list(_read_instaloader(data))
    if not raws:
        raise DataError(
            f"{data} has neither {CSV_NAME} nor Instaloader post metadata (*.json, *.json.xz): "
            f"add a {CSV_NAME} with columns {', '.join(CSV_REQUIRED)}, or download the profile with instaloader"
        )
    return _vet(raws, "instaloader", limits)


def _read_csv(path: Path) -> list[_Raw]:
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path} is not a readable CSV ({exc}): save it as UTF-8 CSV with a header row") from None
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in CSV_REQUIRED if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path} has no column {', '.join(missing)}: the header needs {', '.join(CSV_REQUIRED)} "
            f"(optional: {', '.join(CSV_OPTIONAL)})"
        )
    raws = []
    for number, row in enumerate(frame.to_dict("records"), start=2):  # line 1 is the header
        name = row["file"].strip()
        raws.append(_Raw(
            source=f"{path.name} line {number}",
            image=(path.parent / name) if name else None,
            likes=row["likes"], comments=row["comments"],
            posted_at=row.get("posted_at", "").strip() or None,
            is_ad=row.get("is_ad", ""), caption=row.get("caption", ""),
            missing="" if name else "no file name",
        ))
    return raws


def _read_instaloader(folder: Path) -> Iterator[_Raw]:
    for meta in sorted(p for p in folder.rglob("*") if p.name.endswith((".json", ".json.xz")) and p.is_file()):
        if is_ignored_name(meta.name):
            continue
        stem = meta.name.removesuffix(".xz").removesuffix(".json")
        source = meta.relative_to(folder).as_posix()
        try:
            opener = lzma.open if meta.name.endswith(".xz") else open
            with opener(meta, "rt", encoding="utf-8") as handle:
                structure = json.load(handle)
        except (OSError, EOFError, lzma.LZMAError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            yield _Raw(source, None, None, None, missing=f"metadata file is damaged ({type(exc).__name__})")
            continue
        # Profile, story and comment files sit beside the posts; only posts have likes.
        if not isinstance(structure, dict) or structure.get("instaloader", {}).get("node_type") != "Post":
            continue
        yield _post_from_node(structure.get("node") or {}, source, meta.parent, stem)


def _post_from_node(node: dict[str, Any], source: str, folder: Path, stem: str) -> _Raw:
    """Read a post node the way instaloader's Post properties do, without their network fallbacks."""
    likes = (node.get("edge_media_preview_like") or {}).get("count")
    comments = None
    for key in ("edge_media_to_comment", "edge_media_to_parent_comment"):
        if isinstance(node.get(key), dict) and "count" in node[key]:
            comments = node[key]["count"]
            break
    else:
        comments = node.get("comments")
    stamp = node.get("date", node.get("taken_at_timestamp"))
    edges = (node.get("edge_media_to_caption") or {}).get("edges") or []
    caption = edges[0]["node"]["text"] if edges else (node.get("caption") or "")
    sponsored = bool((node.get("edge_media_to_sponsor_user") or {}).get("edges"))
    # A single picture is <stem>.jpg; a carousel's pictures are <stem>_1.jpg, <stem>_2.jpg, ...: use the first.
    candidates = [folder / f"{base}{suffix}" for base in (stem, f"{stem}_1") for suffix in _IMAGE_SUFFIXES]
    image = next((c for c in candidates if c.exists() or c.is_symlink()), None)
    return _Raw(
        source=source, image=image, likes=likes, comments=comments,
        posted_at=datetime.fromtimestamp(stamp, timezone.utc) if isinstance(stamp, (int, float)) else None,
        is_ad=sponsored, caption=str(caption),
        missing="" if image else f"image not found (expected {stem}.jpg or {stem}_1.jpg)",
    )


def _vet(raws: list[_Raw], fmt: str, limits: ImageLimits) -> Posts:
    rows: list[dict[str, Any]] = []
    bad: list[BadRow] = []
    seen: dict[str, str] = {}
    for raw in raws:
        try:
            row = _vet_one(raw, limits)
        except DataError as exc:
            bad.append(BadRow(raw.source, str(exc)))
            continue
        if row["sha256"] in seen:
            bad.append(BadRow(raw.source, f"same image as {seen[row['sha256']]}"))
            continue
        seen[row["sha256"]] = raw.source
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["posted_at"] = pd.to_datetime(table["posted_at"], utc=True)
    table = table.astype({"likes": "int64", "comments": "int64", "is_ad": "bool"})
    return Posts(table, fmt, bad)


def _vet_one(raw: _Raw, limits: ImageLimits) -> dict[str, Any]:
    if raw.missing:
        raise DataError(raw.missing)
    likes = _count(raw.likes, "likes")
    comments = _count(raw.comments, "comments")
    assert raw.image is not None
    if not raw.image.exists() and not raw.image.is_symlink():
        raise DataError(f"image {raw.image.name} not found")
    try:
        # Training reads each image again with fastai: vet it here with the scorer's own rules, pixels unkept.
        decoded = decode_file(raw.image, None, limits, thumb_px=0)
    except ImageError as exc:
        raise DataError(f"image {raw.image.name}: {exc}") from None
    return {
        "image": str(raw.image.absolute()), "source": raw.source, "likes": likes, "comments": comments,
        "posted_at": _date(raw.posted_at), "is_ad": _flag(raw.is_ad), "caption": str(raw.caption or ""),
        "sha256": decoded.sha256,
    }


def _count(value: Any, name: str) -> int:
    text = str(value).strip().replace(",", "").replace("_", "") if value is not None else ""
    try:
        number = float(text)
    except ValueError:
        raise DataError(f"{name} is not a number: {value!r}") from None
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise DataError(f"{name} must be a whole number of at least 0, got {value!r}")
    return int(number)


def _date(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        stamp = pd.NaT
    if stamp is pd.NaT:
        raise DataError(f"posted_at is not a date: {value!r} (use 2024-05-31 or 2024-05-31T18:00:00)")
    utc: datetime = (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).to_pydatetime()
    return utc


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise DataError(f"is_ad must be true or false, got {value!r}")
