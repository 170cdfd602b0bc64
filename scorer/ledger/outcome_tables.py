"""The ledger's outcome tables: likenesses kept at scoring time, launched posts paired with creatives, track records.

`scorer outcomes` writes them; latest.xlsx, the batch reports' Model sheet and the web page read them.
Part of scorer.ledger.store.Ledger, which owns the connection and the meta table.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import PurePosixPath
from typing import Any

from scorer.ledger.schema import (
    LAUNCH_KEYS,
    PAIR_COLUMNS,
    SCORED_COLUMNS,
    TRACK_RECORD,
    Likeness,
    Pair,
    scored_from_row,
)
from scorer.results import Launch, Scored, TrackSummary
from scorer.sqlitetx import immediate


class OutcomeTables:
    """Launched posts matched back to the creatives scored before them (scorer.outcomes)."""

    _db: sqlite3.Connection
    get: Callable[[str], str | None]  # the meta table (Ledger.get and Ledger.put)
    put: Callable[[str, str], None]

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

    def put_pairs(self, pairs: Sequence[Pair]) -> None:
        """Record pairs found in one download: a post or a creative paired before is paired anew, never twice."""
        with immediate(self._db):
            self._db.executemany("DELETE FROM outcomes WHERE post = ?", [(post,) for post in self._base_named(pairs)])
            self._db.executemany("DELETE FROM outcomes WHERE post = ? OR creative = ?",
                                 [(p.post, p.creative) for p in pairs])
            self._db.executemany(
                f"INSERT INTO outcomes ({PAIR_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(p.post, p.post_sha, p.creative, p.model, p.similarity, p.posted_at, p.likes, p.comments, p.value,
                  p.label, p.thumbnail) for p in pairs],
            )

    def _base_named(self, pairs: Sequence[Pair]) -> list[str]:
        """These posts as a version that keyed a post by its image's base name alone recorded them: a row under
        the base name with the very same picture (SHA-256), unless that name is a post of this download too."""
        keys = {p.post for p in pairs}
        older = {(PurePosixPath(p.post).name, p.post_sha) for p in pairs if "/" in p.post}
        rows = self._db.execute("SELECT post, post_sha FROM outcomes WHERE instr(post, '/') = 0")
        return [post for post, sha in rows if (post, sha) in older and post not in keys]

    def pairs(self, model: str | None = None) -> list[Pair]:
        """The recorded pairs (of one scoring model's creatives, when given), oldest post first."""
        where, args = ("WHERE model = ?", (model,)) if model else ("", ())
        rows = self._db.execute(f"SELECT {PAIR_COLUMNS} FROM outcomes {where} ORDER BY posted_at, post", args)
        return [Pair(*row) for row in rows.fetchall()]

    def put_track_record(self, model: str, record: dict[str, Any]) -> None:
        """Keep a model's latest track record (TrackRecord.as_dict), replacing the one before."""
        self.put(TRACK_RECORD + model, json.dumps(record, default=str))

    def track_record(self, model: str, *, launches: int = 0, thumbnails: bool = True) -> TrackSummary | None:
        """A model's latest track record as reports show it (None before `scorer outcomes` made one).

        With `launches`, that many of its pairs too, newest post first, with the post's and the creative's
        thumbnails unless `thumbnails` is False (a plot needs only the figures).
        """
        text = self.get(TRACK_RECORD + model)
        if text is None:
            return None
        record = json.loads(text)
        rows = record["pairs"][::-1][:launches]  # kept oldest post first
        return TrackSummary(record["headline"], bool(record["no_better_than_guess"]),
                            self._launches(model, rows, thumbnails) if rows else ())

    def _launches(self, model: str, rows: list[dict[str, Any]], thumbnails: bool) -> tuple[Launch, ...]:
        """A record's pairs, with their thumbnails when asked: the post as launched, the creative as scored."""
        post_thumbs, creative_thumbs = self._launch_thumbnails(model, rows) if thumbnails else ({}, {})
        return tuple(Launch(**{key: row[key] for key in LAUNCH_KEYS}, post_thumbnail=post_thumbs.get(row["post"]),
                            creative_thumbnail=creative_thumbs.get(row["creative_sha256"])) for row in rows)

    def _launch_thumbnails(self, model: str, rows: list[dict[str, Any]]
                           ) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """The thumbnails of these pairs' posts (by post) and creatives (by SHA-256)."""
        posts, creatives = {row["post"] for row in rows}, {row["creative_sha256"] for row in rows}
        # streamed and filtered here, so memory holds only the thumbnails that will be shown
        post_thumbs = {post: thumb for post, thumb in self._db.execute(
            "SELECT post, thumbnail FROM outcomes WHERE model = ?", (model,)) if post in posts}
        creative_thumbs = {sha: thumb for sha, thumb in self._db.execute(
            "SELECT files.sha, files.thumbnail FROM outcomes JOIN files ON files.sha = outcomes.creative "
            "WHERE outcomes.model = ? AND files.decision = 'scored'", (model,)) if sha in creatives}
        return post_thumbs, creative_thumbs
