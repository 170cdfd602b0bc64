"""From imported posts to labelled training rows: the cleaning funnel, the classes and the held-out split."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from scorer.errors import ConfigError, DataError
from scorer.settings import CleanSettings, LabelSettings


@dataclass(frozen=True)
class FunnelStep:
    """One step of the cleaning funnel: how many rows it removed and how many were left."""

    rule: str
    removed: int
    left: int


def clean(posts: pd.DataFrame, rules: CleanSettings) -> tuple[pd.DataFrame, list[FunnelStep]]:
    """Drop likely advertised posts by the article's rules, in order; a row counts under the first rule it breaks."""
    likes = posts["likes"].to_numpy(dtype=float)
    comments = posts["comments"].to_numpy(dtype=float)
    # With no likes, any comment makes the ratio infinite and no comment makes it 0: both are out of range.
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(likes > 0, comments / likes, np.where(comments > 0, np.inf, 0.0))
    checks: list[tuple[str, np.ndarray]] = []
    if rules.drop_is_ad:
        checks.append(("is_ad is true", posts["is_ad"].to_numpy(dtype=bool)))
    checks += [
        (f"comments/likes below {_percent(rules.min_comment_ratio)}", ratio < rules.min_comment_ratio),
        (f"comments/likes above {_percent(rules.max_comment_ratio)}", ratio > rules.max_comment_ratio),
        (f"more than {rules.max_likes:,} likes", likes > rules.max_likes),
    ]
    keep = np.ones(len(posts), dtype=bool)
    steps = []
    for rule, drop in checks:
        removed = keep & drop
        keep &= ~drop
        steps.append(FunnelStep(rule, int(removed.sum()), int(keep.sum())))
    return posts[keep].copy(), steps


def _percent(ratio: float) -> str:
    return f"{ratio * 100:g}%"


def label(posts: pd.DataFrame, settings: LabelSettings) -> pd.DataFrame:
    """Add `total` (likes + comments), the `value` that is classed and its `label`, by thresholds or quantiles."""
    table = posts.copy()
    table["total"] = table["likes"] + table["comments"]
    table["value"] = table["total"].astype(float)
    if settings.normalize == "rolling_median":
        if table.empty or table["posted_at"].isna().any():
            raise DataError(
                "'train.label.normalize: rolling_median' needs posted_at for every post: "
                "add the dates, or set it to none"
            )
        table = table.sort_values("posted_at", kind="stable")
        # Accounts grow, so a fixed cut point drifts: compare each post with the account's recent level.
        median = table["total"].rolling(settings.window, min_periods=1).median().clip(lower=1)
        table["value"] = table["total"] / median
    index = class_index(table["value"].to_numpy(), settings, order=_order(table))
    table["label"] = np.asarray(settings.classes, dtype=object)[index]
    return table


def class_index(values: np.ndarray, settings: LabelSettings, order: np.ndarray | None = None) -> np.ndarray:
    """Each value's class, 0 being the lowest.

    Thresholds follow the article: below the first cut point is the lowest class, and the
    range between two cut points is closed (7,000 and 11,000 are both Neutral).
    Quantiles give classes whose sizes differ by at most one; ties are split in `order`.
    """
    k = len(settings.classes)
    if settings.method == "thresholds":
        cuts = settings.thresholds
        index = (values >= cuts[0]).astype(int)
        for cut in cuts[1:]:
            index += values > cut
        return index
    order = np.arange(len(values)) if order is None else order
    ranks = np.empty(len(values), dtype=int)
    ranks[np.lexsort((order, values))] = np.arange(len(values))
    return ranks * k // max(len(values), 1)


def learner_classes(names: Sequence[str], classes: Sequence[str]) -> dict[str, str]:
    """The learner's class that each label name stands for, both lists lowest engagement first.

    By name when both lists hold the same names; by position when only their counts agree, since
    a learner trained elsewhere rarely uses our label names ("High Engagement" for "High").
    """
    if sorted(names) == sorted(classes):
        return {name: name for name in names}
    if len(names) != len(classes):
        raise ConfigError(
            f"'train.label.classes' lists {len(names)} classes {list(names)}, but the learner has {len(classes)}: "
            f"{list(classes)} (lowest first, in the order 'classes' gives): make 'train.label.classes' list "
            f"{len(classes)} names, lowest engagement first, or use a learner with {len(names)} classes"
        )
    return dict(zip(names, classes, strict=True))


def class_numbers(labels: pd.Series, classes: Sequence[str]) -> np.ndarray:
    """Each label's position among `classes` (lowest engagement first)."""
    return np.asarray(labels.map({name: i for i, name in enumerate(classes)}).to_numpy(dtype=int))


def _order(table: pd.DataFrame) -> np.ndarray:
    """Older posts first, when dates are known; file order otherwise."""
    if table["posted_at"].notna().all():
        return np.asarray(table["posted_at"].rank(method="first").to_numpy())
    return np.arange(len(table))


def class_ranges(table: pd.DataFrame, classes: tuple[str, ...]) -> dict[str, list[float] | None]:
    """The lowest and highest classed value seen in each class (None for an empty class)."""
    ranges: dict[str, list[float] | None] = {}
    for name in classes:
        values = table.loc[table["label"] == name, "value"]
        ranges[name] = [float(values.min()), float(values.max())] if len(values) else None
    return ranges


def split(table: pd.DataFrame, valid_pct: float, seed: int) -> tuple[pd.DataFrame, str]:
    """Add `is_valid`: the newest posts when every post has a date ("time"), else a seeded random share ("random")."""
    n = len(table)
    n_valid = min(max(1, round(n * valid_pct)), n - 1)
    table = table.copy()
    if n and table["posted_at"].notna().all():
        # Train on the past, validate on the future, as the model will be used.
        newest = table["posted_at"].rank(method="first", ascending=False) <= n_valid
        table["is_valid"] = newest.to_numpy()
        return table, "time"
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(seed).choice(n, n_valid, replace=False)] = True
    table["is_valid"] = chosen
    return table, "random"
