"""The ledger's tables, and how a row becomes a result and back (see scorer.ledger.store)."""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from scorer.results import Advice, Frame, Lookalikes, ModelInfo, Neighbour, Scored, Video
from scorer.scoring.engine import Item
from scorer.sqlitetx import immediate

LEDGER_NAME = "ledger.sqlite"
VERSION = 4

SCHEMA = """
CREATE TABLE batches (
    id       INTEGER PRIMARY KEY,
    state    TEXT NOT NULL CHECK (state IN ('pending', 'reported')),
    report   TEXT NOT NULL,   -- the workbook's path, chosen when the batch is recorded
    model    TEXT NOT NULL,   -- ModelInfo as JSON, so a recovered report names the model that scored it
    created  REAL NOT NULL
);
CREATE TABLE files (
    id          INTEGER PRIMARY KEY,
    sha         TEXT,             -- content SHA-256; NULL for entries that are not regular files
    path        TEXT NOT NULL,    -- where it was in the inbox
    name        TEXT NOT NULL,    -- the name reports show: its path relative to the inbox
    size        INTEGER,
    mtime_ns    INTEGER,
    decision    TEXT NOT NULL CHECK (decision IN ('scored', 'rejected', 'duplicate')),
    result      TEXT,             -- scored: probabilities, classes, pixels, format, dates, notes as JSON
    thumbnail   BLOB,
    reason      TEXT,             -- rejected and duplicate: why, in a marketer's words
    batch       INTEGER NOT NULL REFERENCES batches(id),
    destination TEXT,             -- where the file is moved; NULL when it stays in place
    done        INTEGER NOT NULL DEFAULT 0  -- 1 at its destination; 2 replaced under its name before it moved
);
CREATE INDEX files_sha ON files(sha);
CREATE INDEX files_path ON files(path);
CREATE INDEX files_pending ON files(done) WHERE done = 0;
CREATE TABLE attempts (
    sha   TEXT PRIMARY KEY,
    count INTEGER NOT NULL
);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# Since version 2: what matches a launched post back to its creative, and the pairs found (scorer.outcomes).
OUTCOMES_SCHEMA = """
CREATE TABLE likeness (
    sha       TEXT PRIMARY KEY,  -- the creative's content SHA-256
    prints    BLOB,              -- perceptual hashes, one per crop (scorer.decoding.prints)
    embedding BLOB,              -- the model's embedding as float16; NULL when the model gives none
    model     TEXT               -- SHA-256 of the model whose embedding it is
);
CREATE TABLE outcomes (
    post       TEXT PRIMARY KEY,  -- the post's image file as named in the data it came from
    post_sha   TEXT NOT NULL,
    creative   TEXT NOT NULL UNIQUE,  -- the matched creative's content SHA-256: each creative posted once
    model      TEXT NOT NULL,     -- SHA-256 of the model that scored the creative: a track record per model
    similarity REAL NOT NULL,
    posted_at  REAL,              -- Unix time; NULL when the data gives no date
    likes      INTEGER NOT NULL,
    comments   INTEGER NOT NULL,
    value      REAL NOT NULL,     -- likes + comments, normalised as the labelling rule does
    label      TEXT NOT NULL,     -- the class the account's labelling rule gives it
    thumbnail  BLOB,              -- the post as launched, for the Track record sheet
    format     TEXT               -- the post's: image, video or carousel; NULL if kept before version 4
);
"""
# + a model's SHA-256: the meta key of its latest track record (scorer.outcomes), as JSON
TRACK_RECORD = "track_record:"
# What turns a ledger of each earlier version into the next one: each step as it was written for its version,
# so that a ledger of any age arrives at the current schema.
MIGRATIONS = {
    1: """
CREATE TABLE looks (sha TEXT PRIMARY KEY, prints BLOB, features BLOB, model TEXT);
CREATE TABLE outcomes (
    post TEXT PRIMARY KEY, post_sha TEXT NOT NULL, creative TEXT NOT NULL UNIQUE, model TEXT NOT NULL,
    similarity REAL NOT NULL, posted_at REAL, likes INTEGER NOT NULL, comments INTEGER NOT NULL, value REAL NOT NULL,
    label TEXT NOT NULL, thumbnail BLOB);
""",
    # 3: one word, one meaning (scorer/__init__.py's glossary): a file's decision, a creative's likeness and embedding
    2: """
ALTER TABLE files RENAME COLUMN outcome TO decision;
ALTER TABLE looks RENAME TO likeness;
ALTER TABLE likeness RENAME COLUMN features TO embedding;
""",
    # 4: a launch knows its post's format, for the track record per format
    3: """
ALTER TABLE outcomes ADD COLUMN format TEXT;
""",
}

Decision = Literal["scored", "rejected", "duplicate"]


@dataclass(frozen=True)
class Candidate(Item):
    """A settled inbox file (an Item) and what intake found of it: its SHA-256 (None unread), size and mtime."""

    sha: str | None = None
    size: int | None = None
    mtime_ns: int | None = None


@dataclass(frozen=True)
class Entry:
    """One decided file: its Candidate, the decision, what the decision rests on, and where the file goes."""

    candidate: Candidate
    decision: Decision
    scored: Scored | None = None  # scored: its result (None where read back for its move: see Ledger.undisposed)
    original: Scored | None = None  # duplicate: the result of the content it repeats
    reason: str = ""  # rejected and duplicate: why, in a marketer's words
    destination: Path | None = None  # where it is moved; None when it stays in place

    @property
    def sha(self) -> str | None:
        """The content decided: what the decoder read where it read the file (it may have changed since intake)."""
        decided = self.scored if self.scored is not None else self.original
        return decided.sha256 if decided is not None else self.candidate.sha


# The destination is where a scored file can be found after the batch, so reports show it as its
# location; kept files and rejected entries that never had one show the inbox path.
SCORED_COLUMNS = (
    "files.name, CASE WHEN files.done = 2 THEN files.path ELSE coalesce(files.destination, files.path) END, "
    "files.sha, files.result, files.thumbnail, batches.report"
)


def scored_from_row(row: Sequence[Any]) -> Scored:
    """A Scored read back from SCORED_COLUMNS: what `scored_json` kept, where the file is now, and its report.

    The report rebuilt from the ledger shows this; prints and embedding live in the likeness table instead.
    """
    name, location, sha, result, thumbnail, report = row
    data = json.loads(result)
    return Scored(
        name=name, location=location, sha256=sha, classes=tuple(data["classes"]), probs=tuple(data["probs"]),
        width=data["width"], height=data["height"], format=data["format"], file_bytes=data["file_bytes"],
        modified=data["modified"], scored_at=data["scored_at"], thumbnail=thumbnail, notes=data["notes"],
        report=report, evidence=_evidence(data.get("evidence")), overlay=_unpack(data.get("overlay")),
        advice=_advice(data.get("advice")), video=_video(data.get("video")),
    )


def scored_json(s: Scored) -> str:
    """What files.result keeps of a scored creative, for `scored_from_row` (its thumbnail has its own column)."""
    return json.dumps({
        "classes": list(s.classes), "probs": list(s.probs), "width": s.width, "height": s.height,
        "format": s.format, "file_bytes": s.file_bytes, "modified": s.modified, "scored_at": s.scored_at,
        "notes": s.notes, "evidence": _evidence_json(s.evidence), "overlay": _pack(s.overlay),
        "advice": asdict(s.advice) if s.advice else None, "video": _video_json(s.video),
    })


# Evidence, advice and video came after the first ledgers: rows without them read as None. Images ride in the
# JSON as base64.
def _pack(blob: bytes | None) -> str | None:
    return base64.b64encode(blob).decode("ascii") if blob else None


def _unpack(text: str | None) -> bytes | None:
    return base64.b64decode(text) if text else None


def _video(data: dict[str, Any] | None) -> Video | None:
    if not data:
        return None
    frames = tuple(Frame(f["time"], f["in_hook"], f["score"], _unpack(f.get("thumbnail"))) for f in data["frames"])
    return Video(data["duration"], frames, data.get("codec", ""))


def _video_json(video: Video | None) -> dict[str, Any] | None:
    if video is None:
        return None
    return {**asdict(video), "frames": [{**asdict(f), "thumbnail": _pack(f.thumbnail)} for f in video.frames]}


def _evidence(data: dict[str, Any] | None) -> Lookalikes | None:
    if not data:
        return None
    neighbours = tuple(Neighbour(**{**n, "thumbnail": _unpack(n.get("thumbnail"))}) for n in data["neighbours"])
    return Lookalikes(neighbours, data["median_total"], data["percentile"])


def _advice(data: dict[str, Any] | None) -> Advice | None:
    if not data:
        return None
    return Advice(data["planned_at"], data["planned_score"], tuple((str(a), float(b)) for a, b in data["best"]))


def _evidence_json(ev: Lookalikes | None) -> dict[str, Any] | None:
    if ev is None:
        return None
    return {**asdict(ev), "neighbours": [{**asdict(n), "thumbnail": _pack(n.thumbnail)} for n in ev.neighbours]}


def file_row(e: Entry, batch: int) -> tuple[Any, ...]:
    """An Entry as its row of the files table, in the order of Ledger.write_batch's INSERT."""
    c, s = e.candidate, e.scored
    result, thumbnail = (scored_json(s), s.thumbnail) if s is not None else (None, None)
    destination = str(e.destination) if e.destination else None
    return (e.sha, str(c.path), c.name, c.size, c.mtime_ns, e.decision, result, thumbnail, e.reason, batch,
            destination, int(e.destination is None))


def model_json(info: ModelInfo) -> str:
    data = asdict(info)
    data["path"] = str(info.path)
    return json.dumps(data, default=str)


def model_from_json(text: str) -> ModelInfo:
    """The ModelInfo that `model_json` wrote."""
    data = json.loads(text)
    return ModelInfo(**{**data, "path": Path(data["path"]), "classes": tuple(data["classes"])})


@dataclass(frozen=True)
class Likeness:
    """What matches a launched post back to a creative: its prints, and its embedding under one model."""

    sha: str
    prints: bytes | None
    embedding: bytes | None
    model: str


# The outcomes table's columns, in the order Launches.put writes them (scorer.ledger.outcome_tables)
LAUNCH_COLUMNS = ("post, post_sha, creative, model, similarity, posted_at, likes, comments, value, label, thumbnail, "
                  "format")


def meta_value(db: sqlite3.Connection, key: str) -> str | None:
    """A value from the meta table, None where it has none."""
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def set_meta(db: sqlite3.Connection, key: str, value: str) -> None:
    """Set a value in the meta table, in a transaction of its own."""
    with immediate(db):
        db.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                   (key, value))
