"""`scorer outcomes`: match an account's downloaded posts to the creatives scored before them; keep the record.

    import_posts + label      the posts, their likes + comments and the class the labelling rule gives them
    score_items               each post's prints and embedding, through the same engine that scored the creatives
    _creative_likenesses           each creative's prints and embedding, computed on first need from its archived file
    match                     one to one, most similar first, above outcomes.min_similarity
    Ledger.put_pairs          recorded: a re-run changes nothing, grown likes update the values
    track_record              the configured model's figures and verdict, kept in the ledger and its card
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd

from scorer.config import require_writable_dir
from scorer.context.signals import zone
from scorer.decoding.vet import ImageLimits
from scorer.errors import DataError
from scorer.ledger.schema import Likeness, Pair
from scorer.ledger.store import Ledger
from scorer.outcomes.match import likenesses_of, match
from scorer.outcomes.track_record import Launched, TrackRecord, figures, pair_row, verdict
from scorer.results import Scored
from scorer.scoring.assembly import open_engine
from scorer.scoring.engine import Engine, Item, score_items
from scorer.settings import Settings
from scorer.textsafe import log_text
from scorer.training.card import keep_track_record
from scorer.training.labels import label
from scorer.training.posts import BadRow, import_posts


@dataclass(frozen=True)
class OutcomesRun:
    """What one `scorer outcomes` found, and the configured model's record after it."""

    record: TrackRecord
    found: int
    unreadable: list[BadRow]
    unmatchable: int  # creatives with no likeness and no archived file to compute one from


def run_outcomes(settings: Settings, data: Path, *, engine: Engine | None = None, now: float | None = None
                 ) -> OutcomesRun:
    """Match the posts in DATA to scored creatives, record the pairs and return the track record."""
    require_writable_dir(settings.state, "state")
    now = time.time() if now is None else now
    table, unreadable = _posts(settings, data)
    own = engine is None
    engine = engine or open_engine(settings, largest_batch=len(table))
    ledger = Ledger(settings.state)
    try:
        sha = engine.opened.sha256
        if len(engine.model.classes) != len(settings.train.label.classes):
            raise DataError(f"the model has {len(engine.model.classes)} classes and train.label.classes "
                            f"{len(settings.train.label.classes)}: give train.label the rule the model was trained on")
        posts, rejected = _post_likenesses(engine, table)
        creatives = ledger.creatives()
        usable, unmatchable = _creative_likenesses(ledger, engine, creatives)
        pairs = _pairs(posts, table, usable, settings.outcomes.min_similarity)
        ledger.put_pairs(pairs)
        record = track_record(ledger, creatives, sha, settings, now, len(posts) - len(pairs))
        ledger.put_track_record(sha, record.as_dict())
    finally:
        ledger.close()
        if own:
            engine.close()
    keep_track_record(settings.model, {k: v for k, v in record.as_dict().items() if k != "pairs"})
    return OutcomesRun(record, len(pairs), unreadable + rejected, unmatchable)


def _posts(settings: Settings, data: Path) -> tuple[pd.DataFrame, list[BadRow]]:
    """The posts with their labelled engagement, each keyed by its image's path in DATA, with its posting time."""
    tz = zone(settings.context.timezone)
    imported = import_posts(data, ImageLimits.from_settings(settings.images))
    if imported.table.empty:
        raise DataError(f"{data} has no usable post: see the reasons listed, and download the profile again")
    table = label(imported.table, settings.train.label).reset_index(drop=True)
    root = data.parent if data.is_file() else data
    table["post"] = [_post_key(Path(image), root.absolute()) for image in table["image"]]
    table["posted"] = [None if pd.isna(when) else _posted(when, bool(day), tz)
                       for when, day in zip(table["posted_at"], table["date_only"], strict=True)]
    return table, imported.bad


def _post_key(image: Path, root: Path) -> str:
    """A post's name in the ledger: its image's path inside the download (as named, else through links), or the
    whole path of an image outside it; never its base name alone, which posts in two folders may share."""
    named, real = Path(os.path.normpath(image)), Path(os.path.realpath(image))
    for path, folder in ((named, Path(os.path.normpath(root))), (real, Path(os.path.realpath(root)))):
        if path.is_relative_to(folder):
            return path.relative_to(folder).as_posix()
    return named.as_posix()


def _posted(when: pd.Timestamp, date_only: bool, tz: ZoneInfo) -> float:
    """A post's Unix time. A date without a time is taken as the last second of that day in the account's time
    zone: a creative scored earlier that day then counts as scored before its post, never after it."""
    if not date_only:
        return float(when.timestamp())
    day = when.date()  # import_posts reads a date alone as its midnight UTC
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), tz).timestamp() - 1


def _post_likenesses(engine: Engine, table: pd.DataFrame) -> tuple[dict[int, Scored], list[BadRow]]:
    """Each readable post's prints and embedding (by table row), and the posts that could not be decoded."""
    items = [Item(Path(image), str(row)) for row, image in enumerate(table["image"])]
    result = score_items(items, engine.model, engine.pool, check=engine.check)
    likenesses = {int(s.name): s for s in result.scored if s.prints is not None}
    bad = [BadRow(log_text(str(table["post"][int(r.name)])), r.reason) for r in result.rejected]
    return likenesses, bad


def _creative_likenesses(ledger: Ledger, engine: Engine, creatives: Sequence[tuple[Scored, str, Likeness | None]]
                    ) -> tuple[list[tuple[Scored, str, Likeness]], int]:
    """Each creative's likeness under the engine's model; one kept without it is computed from its archived file."""
    sha = engine.opened.sha256
    wanted = [s for s, _, likeness in creatives
              if likeness is None or (likeness.model != sha and likeness.embedding is not None)]
    present = [s for s in wanted if Path(s.location).is_file()]
    fresh: list[Likeness] = []
    if present:
        items = [Item(Path(s.location), s.sha256) for s in present]
        for got in score_items(items, engine.model, engine.pool, check=engine.check).scored:
            if got.sha256 == got.name:  # the archived file is still the content that was scored
                fresh.append(Likeness(got.sha256, got.prints, got.embedding, sha))
        ledger.put_likenesses(fresh)
    by_sha = {likeness.sha: likeness for likeness in fresh}
    usable = []
    for s, model, likeness in creatives:
        likeness = by_sha.get(s.sha256, likeness)
        if likeness is not None and likeness.prints is not None:  # another model's embedding is not comparable
            if likeness.model != sha:
                likeness = Likeness(likeness.sha, likeness.prints, None, likeness.model)
            usable.append((s, model, likeness))
    return usable, len(creatives) - len(usable)


def _pairs(posts: dict[int, Scored], table: pd.DataFrame, creatives: Sequence[tuple[Scored, str, Likeness]],
           threshold: float) -> list[Pair]:
    """The posts matched one to one to creatives, as pairs to record."""
    rows = sorted(posts)
    post_likenesses = likenesses_of([posts[r].prints or b"" for r in rows], [posts[r].embedding for r in rows])
    creative_likenesses = likenesses_of([k.prints or b"" for _, _, k in creatives],
                                        [k.embedding for _, _, k in creatives])
    pairs = []
    for p, c, similarity in match(post_likenesses, creative_likenesses, threshold):
        row = table.iloc[rows[p]]
        posted = row["posted"]
        pairs.append(Pair(
            post=str(row["post"]), post_sha=str(row["sha256"]), creative=creatives[c][0].sha256,
            model=creatives[c][1], similarity=similarity,
            posted_at=None if pd.isna(posted) else float(posted), likes=int(row["likes"]),
            comments=int(row["comments"]), value=float(row["value"]), label=str(row["label"]),
            thumbnail=posts[rows[p]].thumbnail,
        ))
    return pairs


def track_record(ledger: Ledger, creatives: Sequence[tuple[Scored, str, Likeness | None]], model: str,
                 settings: Settings, now: float, unmatched_posts: int) -> TrackRecord:
    """One model's record from every pair recorded for its creatives; only mature forward pairs count."""
    by_sha = {s.sha256: s for s, _, _ in creatives}
    launched = [Launched(p, by_sha[p.creative]) for p in ledger.pairs(model) if p.creative in by_sha]
    settled = now - settings.outcomes.min_age_days * 86400
    mature = [item for item in launched if item.counted and (item.pair.posted_at or now) <= settled]
    counted = {id(item) for item in mature}
    train = settings.train
    found = figures(mature, train.label.classes, train.bootstrap, train.seed)
    return TrackRecord(
        model_sha256=model, matched=len(launched), mature=len(mature),
        early=sum(not item.counted for item in launched),
        not_posted=sum(m == model for _, m, _ in creatives) - len(launched), unmatched_posts=unmatched_posts,
        verdict=verdict(len(mature), found["spearman"], settings.outcomes.min_pairs),
        pairs=[pair_row(item, id(item) in counted) for item in launched], **found,
    )
