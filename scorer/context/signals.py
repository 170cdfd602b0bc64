"""The context signals: a small documented list, derived alike from past posts (training) and a planned post (scoring).

A past post's signals use only what was known before it was posted (the previous post's
date, the previous posts' engagement), so the held-out posts are judged without a look ahead.

pandas is imported by the functions that build frames: every `scorer` command imports this module (for
`zone`), and most never need a frame.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np

from scorer.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

#: Each feature and what it measures; hour and weekday enter the model one-hot, counts as log(1 + x).
SIGNALS = {
    "hour": "the posting hour, 0-23, in context.timezone",
    "weekday": "the posting weekday, Monday first, in context.timezone",
    "days_since_previous": "days since the account's previous post",
    "caption_length": "characters in the caption",
    "hashtags": "#hashtags in the caption",
    "mentions": "@mentions in the caption",
    "emoji": "emoji in the caption",
    "rolling_median": "the median likes + comments of the account's previous train.label.window posts",
}
_COUNTS = ("days_since_previous", "caption_length", "hashtags", "mentions", "emoji", "rolling_median")
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

_HASHTAG = re.compile(r"(?<!\w)#\w+")
_MENTION = re.compile(r"(?<![\w@])@[\w.]+")
# Pictographs, symbols and flags: what people mean by emoji, without counting every non-ASCII letter.
_EMOJI = re.compile("[\U0001F1E6-\U0001F1FF\U0001F300-\U0001FAFF\u2600-\u27BF\u2B00-\u2BFF]")


def zone(name: str) -> ZoneInfo:
    """The configured time zone, or a ConfigError that names the fix."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"'context.timezone' is {name!r}, not a time zone: use an IANA name such as "
                          "Europe/Paris or America/New_York (or UTC)") from None


@dataclass(frozen=True)
class Account:
    """What scoring needs of the account's past: its newest post, its usual gap between posts, its recent level."""

    last_posted: datetime
    typical_gap: float
    rolling_median: float


def caption_counts(caption: str) -> dict[str, int]:
    """Length, hashtags, mentions and emoji of a caption."""
    return {"caption_length": len(caption), "hashtags": len(_HASHTAG.findall(caption)),
            "mentions": len(_MENTION.findall(caption)), "emoji": len(_EMOJI.findall(caption))}


def post_signals(posts: pd.DataFrame, tz: ZoneInfo, window: int) -> pd.DataFrame:
    """The signals of each post (`posted_at` UTC, `caption`, `total`), in the rows' own order."""
    import pandas as pd

    order = posts["posted_at"].rank(method="first").to_numpy().argsort()
    ordered = posts.iloc[order]
    when = pd.DatetimeIndex(ordered["posted_at"]).tz_convert(tz)
    gaps = pd.Series(when).diff().dt.total_seconds().to_numpy() / 86400
    previous = ordered["total"].astype(float).rolling(window, min_periods=1).median().shift(1).to_numpy()
    frame = pd.DataFrame({
        "hour": when.hour, "weekday": when.day_of_week,
        # The first post has no previous one: it is given the account's typical gap and level.
        "days_since_previous": np.nan_to_num(gaps, nan=float(np.nanmedian(gaps)) if len(gaps) > 1 else 1.0),
        "rolling_median": np.nan_to_num(previous, nan=float(ordered["total"].iloc[0]) if len(ordered) else 0.0),
    })
    counts = pd.DataFrame([caption_counts(str(c or "")) for c in ordered["caption"]], columns=list(_COUNTS[1:5]))
    frame = pd.concat([frame, counts], axis=1)[list(SIGNALS)]
    frame.index = ordered.index
    return frame.loc[posts.index].reset_index(drop=True)


def account_of(posts: pd.DataFrame, window: int) -> Account:
    """The account's newest post time, median days between posts, and median engagement of its newest `window` posts."""
    import pandas as pd

    ordered = posts.sort_values("posted_at", kind="stable")
    gaps = pd.Series(pd.DatetimeIndex(ordered["posted_at"])).diff().dt.total_seconds().dropna() / 86400
    return Account(pd.Timestamp(ordered["posted_at"].iloc[-1]).to_pydatetime(),
                   float(gaps.median()) if len(gaps) else 1.0,
                   float(ordered["total"].astype(float).tail(window).median()))


def planned_signals(times: Sequence[datetime], caption: str, account: Account, tz: ZoneInfo) -> pd.DataFrame:
    """The signals of one planned post at each of `times` (timezone-aware).

    Posts made since training are unknown here, so the gap since the previous post is the account's usual one.
    """
    import pandas as pd

    local = [t.astimezone(tz) for t in times]
    gap = [account.typical_gap] * len(times)
    counts = caption_counts(caption)
    return pd.DataFrame({"hour": [t.hour for t in local], "weekday": [t.weekday() for t in local],
                         "days_since_previous": gap, **{k: [v] * len(times) for k, v in counts.items()},
                         "rolling_median": [account.rolling_median] * len(times)})[list(SIGNALS)]


def design(frame: pd.DataFrame) -> np.ndarray:
    """The model's input: hour and weekday one-hot (24 + 7 columns), then log(1 + count) of each other feature."""
    hour = np.eye(24)[frame["hour"].to_numpy(dtype=int)]
    weekday = np.eye(7)[frame["weekday"].to_numpy(dtype=int)]
    counts = np.log1p(np.clip(frame[list(_COUNTS)].to_numpy(dtype=float), 0, None))
    return np.hstack([hour, weekday, counts])
