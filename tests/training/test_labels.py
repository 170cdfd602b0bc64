"""The cleaning funnel (the article's rules), the engagement classes and the held-out split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scorer.config import load_settings
from scorer.errors import ConfigError, DataError
from scorer.settings import CleanSettings, LabelSettings
from scorer.training.labels import class_index, class_ranges, clean, label, split

RULES = ["is_ad is true", "comments/likes below 0.5%", "comments/likes above 2%", "more than 16,000 likes"]
KEPT = None

# (likes, comments, is_ad, the first of the article's rules the row breaks, or KEPT)
ROWS = [
    (10000, 100, False, KEPT),                       # 1%
    (10000, 50, False, KEPT),                        # exactly 0.5% is inside the range
    (10000, 49, False, "comments/likes below 0.5%"),
    (10000, 200, False, KEPT),                       # exactly 2% is inside the range
    (10000, 201, False, "comments/likes above 2%"),
    (16000, 160, False, KEPT),                       # 16,000 likes is not more than 16,000
    (16001, 160, False, "more than 16,000 likes"),
    (20000, 100, False, "more than 16,000 likes"),
    (20000, 10, False, "comments/likes below 0.5%"),  # breaks two rules: counted under the first
    (10000, 100, True, "is_ad is true"),
    (20000, 1000, True, "is_ad is true"),
    (0, 0, False, "comments/likes below 0.5%"),     # no likes, no comments: ratio 0
    (0, 5, False, "comments/likes above 2%"),       # comments without likes: ratio infinite
]


def _posts(rows: list[tuple[int, int, bool]], dates: list[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame({
        "image": [f"{n}.jpg" for n in range(len(rows))],
        "source": [f"line {n + 2}" for n in range(len(rows))],
        "likes": [r[0] for r in rows], "comments": [r[1] for r in rows], "is_ad": [r[2] for r in rows],
        "posted_at": pd.to_datetime(dates if dates else [None] * len(rows), utc=True),
    })


def test_funnel_applies_the_articles_rules_in_order_row_by_row() -> None:
    kept, steps = clean(_posts([r[:3] for r in ROWS]), CleanSettings())
    assert list(kept.index) == [i for i, r in enumerate(ROWS) if r[3] is KEPT]
    left = len(ROWS)
    for step, rule in zip(steps, RULES, strict=True):
        removed = sum(r[3] == rule for r in ROWS)
        left -= removed
        assert (step.rule, step.removed, step.left) == (rule, removed, left)
    assert left == 4


def test_rules_are_configurable() -> None:
    rules = CleanSettings(drop_is_ad=False, min_comment_ratio=0.0, max_comment_ratio=1.0, max_likes=10**9)
    kept, steps = clean(_posts([r[:3] for r in ROWS]), rules)
    assert [s.rule for s in steps] == ["comments/likes below 0%", "comments/likes above 100%",
                                       "more than 1,000,000,000 likes"]
    assert len(kept) == len(ROWS) - 1  # only comments without likes (an infinite ratio) is still out


@pytest.mark.parametrize(
    ("likes", "comments", "expected"),
    [(0, 0, "Low"), (6900, 99, "Low"), (6930, 70, "Neutral"), (10890, 110, "Neutral"), (10890, 111, "High"),
     (15000, 200, "High")],
)
def test_article_thresholds_at_their_edges(likes: int, comments: int, expected: str) -> None:
    # Totals 6999, 7000, 11000 and 11001: below 7,000 is Low, 7,000 to 11,000 Neutral, above 11,000 High.
    labelled = label(_posts([(likes, comments, False)]), LabelSettings())
    assert labelled["total"].iloc[0] == likes + comments
    assert labelled["label"].iloc[0] == expected


def test_thresholds_for_more_classes() -> None:
    settings = LabelSettings(thresholds=(10.0, 20.0, 30.0), classes=("a", "b", "c", "d"))
    values = np.array([9, 10, 20, 21, 30, 31])
    assert list(class_index(values, settings)) == [0, 1, 1, 2, 2, 3]


def test_quantiles_give_equal_classes_in_order_of_total() -> None:
    totals = [900, 100, 500, 300, 800, 200, 700, 400, 600]
    labelled = label(_posts([(t, 0, False) for t in totals]), LabelSettings(method="quantiles"))
    by_total = dict(zip(labelled["total"], labelled["label"], strict=True))
    assert [by_total[t] for t in sorted(totals)] == ["Low"] * 3 + ["Neutral"] * 3 + ["High"] * 3
    ranges = class_ranges(labelled, ("Low", "Neutral", "High"))
    assert ranges == {"Low": [100, 300], "Neutral": [400, 600], "High": [700, 900]}


def test_quantiles_split_ties_older_posts_first() -> None:
    dates = [f"2024-01-0{d}" for d in (6, 5, 4, 3, 2, 1)]
    labelled = label(_posts([(1000, 0, False)] * 6, dates), LabelSettings(method="quantiles"))
    oldest_first = labelled.sort_values("posted_at")["label"].tolist()
    assert oldest_first == ["Low", "Low", "Neutral", "Neutral", "High", "High"]


def test_rolling_median_compares_each_post_with_the_accounts_recent_level() -> None:
    dates = [f"2024-01-0{d}" for d in range(1, 7)]
    totals = [1000, 3000, 2000, 4000, 8000, 4000]
    settings = LabelSettings(normalize="rolling_median", window=3, thresholds=(0.8, 1.25))
    labelled = label(_posts([(t, 0, False) for t in reversed(totals)], list(reversed(dates))), settings)
    labelled = labelled.sort_values("posted_at")
    # medians of the last three posts up to each one: 1000, 2000, 2000, 3000, 4000, 4000
    assert labelled["value"].tolist() == pytest.approx([1.0, 1.5, 1.0, 4000 / 3000, 2.0, 1.0])
    assert labelled["label"].tolist() == ["Neutral", "High", "Neutral", "High", "High", "Neutral"]


def test_rolling_median_needs_dates() -> None:
    with pytest.raises(DataError, match="needs posted_at for every post: add the dates, or set it to none"):
        label(_posts([(1000, 0, False)]), LabelSettings(normalize="rolling_median", thresholds=(0.8, 1.25)))


def test_rolling_median_with_count_thresholds_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("train:\n  label:\n    normalize: rolling_median\n")
    with pytest.raises(ConfigError, match=r"are ratios to the rolling median .* got \[7000.0, 11000.0\]"):
        load_settings(config)


def test_split_holds_out_the_newest_posts_when_dates_are_known() -> None:
    dates = pd.date_range("2024-01-01", periods=10, freq="D", tz="UTC").to_numpy()[::-1]
    posts = _posts([(n, 0, False) for n in range(10)], list(dates))
    table, how = split(posts, 0.3, seed=1)
    assert how == "time"
    assert table.loc[table["is_valid"], "posted_at"].min() > table.loc[~table["is_valid"], "posted_at"].max()
    assert sorted(table.loc[table["is_valid"], "likes"]) == [0, 1, 2]  # the newest three


def test_split_is_random_but_seeded_without_dates() -> None:
    posts = _posts([(n, 0, False) for n in range(20)])
    first, how = split(posts, 0.25, seed=7)
    again, _ = split(posts, 0.25, seed=7)
    other, _ = split(posts, 0.25, seed=8)
    assert how == "random"
    assert first["is_valid"].sum() == 5
    assert first["is_valid"].tolist() == again["is_valid"].tolist()
    assert first["is_valid"].tolist() != other["is_valid"].tolist()
