"""The ledger's outcome tables: likenesses kept at scoring time, launches, and each model's track record.

`scorer outcomes` writes them; latest.xlsx, the batch reports' Model sheet and the web page read them.
Launches works on the connection of the Ledger that holds it (scorer.ledger.store), within its transactions;
the track records sit in the ledger's meta table, one JSON each.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import PurePosixPath

from scorer.ledger.schema import (
    LAUNCH_COLUMNS,
    SCORED_COLUMNS,
    TRACK_RECORD,
    Likeness,
    meta_value,
    scored_from_row,
    set_meta,
)
from scorer.results import Scored
from scorer.sqlitetx import immediate
from scorer.track_record import Launch, TrackRecord

# A launch's creative is the first scored row of its content, as `Launches.creatives` lists them.
_FIRST_SCORED = ("files.id = (SELECT min(id) FROM files AS first WHERE first.sha = outcomes.creative "
                 "AND first.decision = 'scored')")


class Launches:
    """Launched posts paired with the creatives scored before them, and the track records made of them."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def creatives(self) -> list[tuple[Scored, str, Likeness | None]]:
        """Every creative scored, once per content: its result, the scoring model's SHA-256 and its likeness."""
        rows = self._db.execute(
            f"SELECT {SCORED_COLUMNS}, json_extract(batches.model, '$.sha256'), likeness.prints, likeness.embedding, "
            "likeness.model FROM files JOIN batches ON batches.id = files.batch "
            "LEFT JOIN likeness ON likeness.sha = files.sha "
            "WHERE files.id IN (SELECT min(id) FROM files WHERE decision = 'scored' GROUP BY sha) ORDER BY files.id"
        ).fetchall()
        found = []
        for row in rows:
            scored, (model, prints, embedding, likeness_model) = scored_from_row(row[:6]), row[6:]
            likeness = Likeness(scored.sha256, prints, embedding, likeness_model) if prints is not None else None
            found.append((scored, str(model), likeness))
        return found

    def put_likenesses(self, likenesses: Sequence[Likeness]) -> None:
        """Keep likenesses computed on first need (creatives scored before they were kept, or under another model)."""
        with immediate(self._db):
            self._db.executemany(
                "INSERT INTO likeness (sha, prints, embedding, model) VALUES (?, ?, ?, ?) ON CONFLICT(sha) DO UPDATE "
                "SET prints = excluded.prints, embedding = excluded.embedding, model = excluded.model",
                [(k.sha, k.prints, k.embedding, k.model) for k in likenesses],
            )

    def put(self, launches: Sequence[Launch]) -> None:
        """Keep launches found in one download: a post or a creative paired before is paired anew, never twice."""
        with immediate(self._db):
            older = self._base_named(launches)
            self._db.executemany("DELETE FROM outcomes WHERE post = ?", [(post,) for post in older])
            self._db.executemany("DELETE FROM outcomes WHERE post = ? OR creative = ?",
                                 [(launch.post, launch.creative.sha256) for launch in launches])
            self._db.executemany(
                f"INSERT INTO outcomes ({LAUNCH_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(k.post, k.post_sha256, k.creative.sha256, k.model, k.similarity, k.posted_at, k.likes, k.comments,
                  k.value, k.real_class, k.post_thumbnail, k.format) for k in launches],
            )

    def _base_named(self, launches: Sequence[Launch]) -> list[str]:
        """These posts as a version that keyed a post by its image's base name alone kept them: a row under
        the base name with the very same picture (SHA-256), unless that name is a post of this download too."""
        keys = {k.post for k in launches}
        older = {(PurePosixPath(k.post).name, k.post_sha256) for k in launches if "/" in k.post}
        rows = self._db.execute("SELECT post, post_sha FROM outcomes WHERE instr(post, '/') = 0")
        return [post for post, sha in rows if (post, sha) in older and post not in keys]

    def of(self, model: str, *, posts: Sequence[str] | None = None, thumbnails: bool = True) -> list[Launch]:
        """The launches of one model's creatives (only these posts', when given), oldest post first.

        Each creative is read as scored, less its evidence, overlay and advice, which a launch never shows;
        without `thumbnails` neither picture is read (a plot or the figures need none). A launch kept before
        formats were has its creative's (a video's post was a video, a still's an image).
        """
        picture, post_picture = ("thumbnail", "outcomes.thumbnail") if thumbnails else ("NULL", "NULL")
        # the files table as SCORED_COLUMNS reads it, with only what a launch needs of each row
        files = (f"SELECT id, sha, name, path, destination, done, batch, {picture} AS thumbnail, "
                 "json_remove(result, '$.evidence', '$.overlay', '$.advice') AS result FROM files")
        only = "AND outcomes.post IN (SELECT value FROM json_each(?))" if posts is not None else ""
        rows = self._db.execute(
            "SELECT outcomes.post, outcomes.post_sha, outcomes.model, outcomes.similarity, outcomes.posted_at, "
            f"outcomes.likes, outcomes.comments, outcomes.value, outcomes.label, {post_picture}, outcomes.format, "
            f"{SCORED_COLUMNS} "
            f"FROM outcomes JOIN ({files}) AS files ON {_FIRST_SCORED} "
            f"JOIN batches ON batches.id = files.batch WHERE outcomes.model = ? {only} "
            "ORDER BY outcomes.posted_at, outcomes.post",
            (model, *([json.dumps(list(posts))] if posts is not None else [])),
        )
        launches = []
        for post, post_sha, model, similarity, posted_at, likes, comments, value, label, thumbnail, fmt, *row in rows:
            creative = scored_from_row(row)
            launches.append(Launch(post, post_sha, creative, model, similarity, posted_at, likes, comments, value,
                                   label, thumbnail, fmt or ("image" if creative.video is None else "video")))
        return launches

    def put_track_record(self, track: TrackRecord) -> None:
        """Keep a model's latest track record, replacing the one before."""
        set_meta(self._db, TRACK_RECORD + track.model_sha256, json.dumps(track.as_dict(), default=str))

    def track_record(self, model: str, *, newest: int = 0, thumbnails: bool = True) -> TrackRecord | None:
        """A model's latest track record (None before `scorer outcomes` made one), with its `newest` launches.

        Those launches carry the post's and the creative's thumbnails unless `thumbnails` is False.
        """
        text = meta_value(self._db, TRACK_RECORD + model)
        if text is None:
            return None
        data = json.loads(text)
        posts = [row["post"] for row in data["pairs"][::-1][:newest]]  # kept oldest post first
        return TrackRecord.kept(data, tuple(self.of(model, posts=posts, thumbnails=thumbnails)) if posts else ())
