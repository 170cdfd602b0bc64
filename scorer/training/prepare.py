"""Posts made ready for training and indexing: imported, cleaned, labelled and split, or refused as too few."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scorer.decoding.vet import ImageLimits
from scorer.decoding.video_probe import VideoLimits
from scorer.errors import DataError
from scorer.settings import Settings
from scorer.training.formats import Engagement, compare_engagement, label_posts
from scorer.training.labels import FunnelStep, clean, split
from scorer.training.posts import Posts, import_posts

log = logging.getLogger(__name__)

# Fewer posts than this cannot be both trained on and judged.
MIN_POSTS = 20


@dataclass(frozen=True)
class Prepared:
    """Posts imported, cleaned, labelled (per format where video posts engage differently) and split, ready to fit."""

    posts: Posts
    funnel: list[FunnelStep]
    table: pd.DataFrame
    split: str
    counts: pd.DataFrame
    engagement: Engagement


def prepare(settings: Settings, data: Path) -> Prepared:
    """Import, clean, label and split the posts; refuse data too small to train and judge."""
    t = settings.train
    posts = import_posts(data, ImageLimits.from_settings(settings.images), VideoLimits.from_settings(settings.video))
    for row in posts.bad:
        log.warning("skipped %s: %s", row.source, row.reason)
    kept, steps = clean(posts.table, t.clean)
    funnel = [FunnelStep("rows read", 0, len(posts.table) + len(posts.bad)),
              FunnelStep("unusable rows (listed above)", len(posts.bad), len(posts.table)), *steps]
    for step in funnel:
        log.info("funnel: %-32s removed %5d, left %5d", step.rule, step.removed, step.left)
    _check_count(len(kept))  # before labelling: an empty table has nothing to class or split
    engagement = compare_engagement(kept, t.bootstrap, t.seed)
    if engagement.videos:
        log.info("formats: %s", engagement.line())
    table, how = split(label_posts(kept, t.label, engagement), t.valid_pct, t.seed)
    table = table.reset_index(drop=True)
    counts = _class_counts(table, t.label.classes)
    _check_enough(table, counts)
    return Prepared(posts, funnel, table, how, counts, engagement)


def _class_counts(table: pd.DataFrame, classes: tuple[str, ...]) -> pd.DataFrame:
    part = np.where(table["is_valid"], "valid", "train")
    counts = pd.crosstab(table["label"], part).reindex(index=list(classes), columns=["train", "valid"])
    return counts.fillna(0).astype(int)


def _check_count(n: int) -> None:
    if n < MIN_POSTS:
        raise DataError(
            f"only {n} posts are left after cleaning (see the funnel): training needs at least {MIN_POSTS}; "
            "add posts, or relax the rules under 'train.clean' in config.yaml"
        )


def _check_enough(table: pd.DataFrame, counts: pd.DataFrame) -> None:
    _check_count(len(table))
    empty = [name for name, n in counts["train"].items() if n == 0]
    if empty:
        raise DataError(
            f"no training posts in class {', '.join(empty)}: add posts, change 'train.label.thresholds', "
            "or set 'train.label.method: quantiles' in config.yaml"
        )
