"""`scorer outcomes`: match an account's downloaded posts to the creatives scored before them; keep the record.

    import_posts + label      the posts, their likes + comments and the class the labelling rule gives them
    score_items               each post's prints and embedding, through the same engine that scored the creatives
    _creative_likenesses      each creative's prints and embedding, computed on first need from its archived file
    match                     one to one, most similar first, above outcomes.min_similarity
    Launches.put              the launches kept in the ledger: a re-run changes nothing, grown likes update them
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
from scorer.decoding.video_probe import VideoLimits
from scorer.errors import DataError
from scorer.ledger.outcome_tables import Launches
from scorer.ledger.schema import Likeness
from scorer.ledger.store import Ledger
from scorer.outcomes.figures import by_format, figures, verdict
from scorer.outcomes.match import likenesses_of, match
from scorer.results import Scored
from scorer.scoring.assembly import open_engine
from scorer.scoring.engine import Engine, Item, score_items
from scorer.settings import Settings
from scorer.textsafe import log_text
from scorer.track_record import Launch, TrackRecord
from scorer.training.card import keep_track_record
from scorer.training.formats import card_engagement, label_posts
from scorer.training.posts import BadRow, import_posts


@dataclass(frozen=True)
class OutcomesRun:
    """What one `scorer outcomes` found, and the configured model's track record after it."""

    track: TrackRecord
    found: int
    unreadable: list[BadRow]
    unmatchable: int  # creatives with no likeness and no archived file to compute one from


def run_outcomes(settings: Settings, data: Path, *, engine: Engine | None = None, now: float | None = None
                 ) -> OutcomesRun:
    """Match the posts in DATA to scored creatives, keep the launches and return the track record."""
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
        creatives = ledger.launches.creatives()
        usable, unmatchable = _creative_likenesses(ledger.launches, engine, creatives)
        launches = _launches(posts, table, usable, settings.outcomes.min_similarity)
        ledger.launches.put(launches)
        track = track_record(ledger.launches, creatives, sha, settings, now, len(posts) - len(launches))
        ledger.launches.put_track_record(track)
    finally:
        ledger.close()
        if own:
            engine.close()
    keep_track_record(settings.model, {k: v for k, v in track.as_dict().items() if k != "pairs"})
    return OutcomesRun(track, len(launches), unreadable + rejected, unmatchable)


def _posts(settings: Settings, data: Path) -> tuple[pd.DataFrame, list[BadRow]]:
    """The posts with their labelled engagement, each keyed by its image's path in DATA, with its posting time."""
    tz = zone(settings.context.timezone)
    imported = import_posts(data, ImageLimits.from_settings(settings.images), VideoLimits.from_settings(settings.video))
    if imported.table.empty:
        raise DataError(f"{data} has no usable post: see the reasons listed, and download the profile again")
    # as the model's card labelled its own posts: apart where its videos engaged unlike its images
    table = label_posts(imported.table, settings.train.label, card_engagement(settings.model)).reset_index(drop=True)
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
    """Each readable post's prints and embedding (by table row), and the posts that could not be decoded.

    A video post is decoded as scoring decodes a video, frames sampled alike, where its video was downloaded;
    its cover alone where it was not."""
    items = [Item(Path(video or image), str(post))
             for image, video, post in zip(table["image"], table["video"], table["post"], strict=True)]
    rows = {str(item.path): row for row, item in enumerate(items)}  # a result's location is its item's path
    result = score_items(items, engine.model, engine.pool, check=engine.check)
    likenesses = {rows[s.location]: s for s in result.scored if s.prints is not None}
    return likenesses, [BadRow(log_text(r.name), r.reason) for r in result.rejected]


def _creative_likenesses(store: Launches, engine: Engine, creatives: Sequence[tuple[Scored, str, Likeness | None]]
                         ) -> tuple[list[tuple[Scored, str, Likeness]], int]:
    """Each creative's likeness under the engine's model; one kept without it is computed from its archived file."""
    sha = engine.opened.sha256
    wanted = [s for s, _, likeness in creatives
              if likeness is None or (likeness.model != sha and likeness.embedding is not None)]
    present = [s for s in wanted if Path(s.location).is_file()]
    fresh: list[Likeness] = []
    if present:
        shas = {s.sha256 for s in present}
        items = [Item(Path(s.location), s.name) for s in present]
        fresh = [Likeness(got.sha256, got.prints, got.embedding, sha)
                 for got in score_items(items, engine.model, engine.pool, check=engine.check).scored
                 if got.sha256 in shas]  # an archived file that is still content that was scored
        store.put_likenesses(fresh)
    by_sha = {likeness.sha: likeness for likeness in fresh}
    usable = []
    for s, model, likeness in creatives:
        likeness = by_sha.get(s.sha256, likeness)
        if likeness is not None and likeness.prints is not None:  # another model's embedding is not comparable
            if likeness.model != sha:
                likeness = Likeness(likeness.sha, likeness.prints, None, likeness.model)
            usable.append((s, model, likeness))
    return usable, len(creatives) - len(usable)


def _launches(posts: dict[int, Scored], table: pd.DataFrame, creatives: Sequence[tuple[Scored, str, Likeness]],
              threshold: float) -> list[Launch]:
    """The posts matched one to one to creatives, as launches to keep."""
    rows = sorted(posts)
    post_likenesses = likenesses_of([posts[r].prints or b"" for r in rows], [posts[r].embedding for r in rows])
    creative_likenesses = likenesses_of([k.prints or b"" for _, _, k in creatives],
                                        [k.embedding for _, _, k in creatives])
    launches = []
    for p, c, similarity in match(post_likenesses, creative_likenesses, threshold):
        row = table.iloc[rows[p]]
        posted = row["posted"]
        creative, model, _ = creatives[c]
        launches.append(Launch(
            post=str(row["post"]), post_sha256=str(row["sha256"]), creative=creative, model=model,
            similarity=similarity, posted_at=None if pd.isna(posted) else float(posted), likes=int(row["likes"]),
            comments=int(row["comments"]), value=float(row["value"]), real_class=str(row["label"]),
            post_thumbnail=posts[rows[p]].thumbnail, format=str(row["format"]),
        ))
    return launches


def track_record(store: Launches, creatives: Sequence[tuple[Scored, str, Likeness | None]], model: str,
                 settings: Settings, now: float, unmatched_posts: int) -> TrackRecord:
    """One model's track record from every launch kept for its creatives; only mature forward launches count."""
    launches = store.of(model, thumbnails=False)
    settled = now - settings.outcomes.min_age_days * 86400
    counted = [launch for launch in launches if launch.counted(settled)]
    train = settings.train
    found = figures(counted, train.label.classes, train.bootstrap, train.seed)
    return TrackRecord(
        model_sha256=model, settled=settled, matched=len(launches), mature=len(counted),
        early=sum(not launch.forward for launch in launches),
        not_posted=sum(m == model for _, m, _ in creatives) - len(launches), unmatched_posts=unmatched_posts,
        verdict=verdict(len(counted), found["spearman"], settings.outcomes.min_pairs), launches=tuple(launches),
        formats=by_format(launches, settled, train.label.classes, train.bootstrap, train.seed), **found,
    )
