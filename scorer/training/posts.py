"""Import past posts for training: a posts.csv folder or an Instaloader profile folder, into one table.

Every row that cannot be used (missing or unreadable image or video, a count that is not a
number, a malformed row or metadata file, an image already seen) is counted and kept
with its reason, never dropped silently: bad input costs its own post, never the run.
Nothing here goes to the network: Instaloader's files are read as plain JSON
(scorer.training.instaloader).

Each post has a format (image, video or carousel), its `image` (the picture, a video's cover, or
the video itself where no cover was downloaded) and its `video` (the file whose frames it trains
on, "" where there is none).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from scorer.decoding.decode import decode_file
from scorer.decoding.vet import ImageLimits
from scorer.decoding.video import decode_video
from scorer.decoding.video_probe import VideoLimits, sniff_video_file
from scorer.errors import DataError, ImageError
from scorer.textsafe import log_text
from scorer.training.instaloader import FORMATS, metadata_files, picture, post_node, read_metadata, video_file

CSV_NAME = "posts.csv"
CSV_REQUIRED = ("file", "likes", "comments")
CSV_OPTIONAL = ("posted_at", "is_ad", "caption", "format")
# date_only: posted_at was a date without a time of day (read as that day's midnight UTC)
COLUMNS = ("image", "source", "likes", "comments", "posted_at", "is_ad", "caption", "sha256", "date_only", "format",
           "video")
POST_FORMATS = tuple(FORMATS.values())  # image, video, carousel

_TRUE = {"true", "yes", "1", "y", "t"}
_FALSE = {"false", "no", "0", "n", "f", ""}
# More likes or comments than any post has had: a count past it is a mistake, and past 2**63 no column holds it.
MAX_COUNT = 10**12
# A posting date outside these is a mistake (pandas cannot hold most of them).
_EARLIEST, _LATEST = datetime(1970, 1, 1, tzinfo=timezone.utc), datetime(2100, 1, 1, tzinfo=timezone.utc)
_SHOWN = 40  # characters of a bad value or name that its reason shows


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
    """A post as read from its source, before its values and image are vetted."""

    source: str
    image: Path | None
    likes: Any = None
    comments: Any = None
    posted_at: Any = None
    is_ad: Any = False
    caption: str = ""
    format: Any = None  # None: a video if its file is one, else an image
    video: Path | None = None
    unreadable: str = ""  # why the row or file cannot be read at all
    no_image: str = ""  # why it names no image, said once its values are found good


def import_posts(data: Path, limits: ImageLimits, video: VideoLimits | None = None) -> Posts:
    """Read a posts.csv folder (or the CSV itself) or an Instaloader profile folder; videos vetted within `video`."""
    video = video or VideoLimits()
    if data.is_file() and data.suffix.lower() == ".csv":
        return _vet(_read_csv(data), "posts.csv", limits, video)
    if not data.is_dir():
        raise DataError(f"{data} does not exist: give a folder with posts.csv, or an Instaloader profile folder")
    if (data / CSV_NAME).is_file():
        return _vet(_read_csv(data / CSV_NAME), "posts.csv", limits, video)
    raws = list(_read_instaloader(data))
    if not raws:
        raise DataError(
            f"{data} has neither {CSV_NAME} nor Instaloader post metadata (*.json, *.json.xz): "
            f"add a {CSV_NAME} with columns {', '.join(CSV_REQUIRED)}, or download the profile with instaloader"
        )
    return _vet(raws, "instaloader", limits, video)


def _read_csv(path: Path) -> list[_Raw]:
    unreadable = f"{path} is not a readable CSV ({{}}): save it as UTF-8 CSV with a header row"
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle, skipinitialspace=True)
            header = [c.strip().lower() for c in next(reader, [])]
            if not header:
                raise DataError(unreadable.format("no header row"))
            missing = [c for c in CSV_REQUIRED if c not in header]
            if missing:
                raise DataError(
                    f"{path} has no column {', '.join(missing)}: the header needs {', '.join(CSV_REQUIRED)} "
                    f"(optional: {', '.join(CSV_OPTIONAL)})"
                )
            return list(_csv_rows(reader, header, path))
    except (csv.Error, UnicodeDecodeError) as exc:  # in the header, or text that is not UTF-8
        raise DataError(unreadable.format(exc)) from None


def _csv_rows(reader: Any, header: list[str], path: Path) -> Iterator[_Raw]:
    """Each data row, a row that cannot be read costing itself alone."""
    while True:
        number = reader.line_num + 1  # where the next row starts; line 1 is the header
        source = f"{path.name} line {number}"
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:  # a field past the csv module's limit: the reader goes on at the next row
            yield _Raw(source, None, unreadable=f"cannot be read as CSV ({exc})")
            continue
        if not fields:
            continue  # a blank line
        if len(fields) > len(header):  # which value the extra comma split cannot be told
            yield _Raw(source, None, unreadable=f"has {len(fields)} fields where the header has {len(header)}: "
                                                "quote a value that holds a comma")
            continue
        row = {**dict.fromkeys(header, ""), **dict(zip(header, fields, strict=False))}  # a short row: the rest empty
        name = row["file"].strip()
        yield _Raw(source, image=(path.parent / name) if name else None, likes=row["likes"],
                   comments=row["comments"], posted_at=row.get("posted_at", "").strip() or None,
                   is_ad=row.get("is_ad", ""), caption=row.get("caption", ""), format=row.get("format") or None,
                   no_image="no file name")


def _read_instaloader(folder: Path) -> Iterator[_Raw]:
    for meta in metadata_files(folder):
        source = log_text(meta.relative_to(folder).as_posix())
        try:
            node = post_node(read_metadata(meta))
        except DataError as exc:
            yield _Raw(source, None, unreadable=str(exc))
            continue
        if node is None:  # profile, story and comment files sit beside the posts
            continue
        stem = meta.name.removesuffix(".xz").removesuffix(".json")
        video = video_file(meta.parent, stem) if node.format == "video" else None
        # A video downloaded with --no-video-thumbnails has no cover: the video stands for the post.
        yield _Raw(source, picture(meta.parent, stem) or video, node.likes, node.comments, node.stamp,
                   node.sponsored, node.caption, node.format, video,
                   no_image=f"image not found (expected {stem}.jpg" + (f" or {stem}.mp4)" if node.format == "video"
                                                                       else f" or {stem}_1.jpg)"))


def _vet(raws: list[_Raw], fmt: str, limits: ImageLimits, video: VideoLimits) -> Posts:
    rows: list[dict[str, Any]] = []
    bad: list[BadRow] = []
    seen: dict[str, str] = {}
    for raw in raws:
        try:
            row = _vet_one(raw, limits, video)
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
    table = table.astype({"likes": "int64", "comments": "int64", "is_ad": "bool", "date_only": "bool"})
    return Posts(table, fmt, bad)


def _vet_one(raw: _Raw, limits: ImageLimits, video_limits: VideoLimits) -> dict[str, Any]:
    """The row's values, then its image and video; the first thing wrong is the reason (a DataError)."""
    if raw.unreadable:
        raise DataError(raw.unreadable)
    likes, comments = _count(raw.likes, "likes"), _count(raw.comments, "comments")
    posted_at, date_only = _date(raw.posted_at)
    is_ad = _flag(raw.is_ad)
    fmt = _post_format(raw.format)
    if raw.image is None:
        raise DataError(raw.no_image)
    if not os.path.lexists(raw.image):  # lexists: a name too long or with a NUL byte is not found, not an error
        raise DataError(f"image {_clip(raw.image.name)} not found")
    # A video is known by its content, as scoring knows it, whatever the name posts.csv gives it.
    video = raw.video or (raw.image if sniff_video_file(raw.image) else None)
    if video is not None and fmt in ("image", "carousel"):
        raise DataError(f"format is {fmt}, but {_clip(video.name)} is a video: set format to video, "
                        "or name the post's picture")
    fmt = fmt or ("video" if video else "image")
    sha = _vetted(raw.image, limits, video_limits, is_video=raw.image == video)
    if video is not None and video != raw.image:
        _vetted(video, limits, video_limits, is_video=True)
    return {
        "image": str(raw.image.absolute()), "source": raw.source, "likes": likes, "comments": comments,
        "posted_at": posted_at, "is_ad": is_ad, "caption": str(raw.caption or ""), "sha256": sha,
        "date_only": date_only, "format": fmt, "video": str(video.absolute()) if video else "",
    }


def _vetted(path: Path, limits: ImageLimits, video_limits: VideoLimits, *, is_video: bool) -> str:
    """A file's SHA-256 once it decodes by the scorer's own rules (a video's cover only), pixels unkept."""
    try:
        # Training reads each file again: vet it here, as scoring would, so that a bad one costs its post alone.
        if is_video:
            return decode_video(path, None, video_limits, thumb_px=0).sha256
        return decode_file(path, None, limits, thumb_px=0).sha256
    except ImageError as exc:
        raise DataError(f"{'video' if is_video else 'image'} {_clip(path.name)}: {exc}") from None


def _post_format(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip().lower()
    if text not in POST_FORMATS and text:
        raise DataError(f"format must be {', '.join(POST_FORMATS[:-1])} or {POST_FORMATS[-1]}, got {_shown(value)}")
    return text or None


def _count(value: Any, name: str) -> int:
    try:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ValueError(value)
        number = float(str(value).strip().replace(",", "").replace("_", ""))
    except ValueError:
        raise DataError(f"{name} is not a number: {_shown(value)}") from None
    if not math.isfinite(number) or number < 0 or number != int(number):
        raise DataError(f"{name} must be a whole number of at least 0, got {_shown(value)}")
    if number > MAX_COUNT:
        raise DataError(f"{name} is too large for a count: {_shown(value)} (at most {MAX_COUNT:,})")
    return int(number)


def _date(value: Any) -> tuple[datetime | None, bool]:
    """A post's time in UTC, and whether it was a date without a time of day."""
    if value is None:
        return None, False
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # Instaloader's Unix time
        if not (math.isfinite(value) and _EARLIEST.timestamp() <= value < _LATEST.timestamp()):
            raise DataError(f"date must be a Unix time between 1970 and 2100, got {_shown(value)}")
        return datetime.fromtimestamp(value, timezone.utc), False
    text = str(value).strip()
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, OverflowError):
        stamp = pd.NaT
    if stamp is pd.NaT:
        raise DataError(f"posted_at is not a date: {_shown(value)} (use 2024-05-31 or 2024-05-31T18:00:00)")
    utc: datetime = (stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")).to_pydatetime()
    if not _EARLIEST <= utc < _LATEST:
        raise DataError(f"posted_at must be between 1970 and 2100, got {_shown(value)}")
    return utc, stamp.tzinfo is None and ":" not in text and stamp == stamp.normalize()


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise DataError(f"is_ad must be true or false, got {_shown(value)}")


def _clip(text: str) -> str:
    """Untrusted text as a reason shows it: on one line, at most _SHOWN characters."""
    return log_text(text if len(text) <= _SHOWN else f"{text[:_SHOWN]}…")


def _shown(value: Any) -> str:
    return _clip(repr(value))
