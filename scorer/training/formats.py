"""Post formats: how many of each, whether video posts engage unlike image posts, labels and accuracy per format.

Carousels train on their first picture and are labelled with the images. Whether videos engage
differently is the ratio of their median likes + comments to the images' (videos over images), with a
bootstrap 95% interval; its log is the difference in median log(likes + comments). Where the interval
excludes 1, each of the two groups is labelled on its own (`label_posts`), since a label that only
says "this is a video" teaches the learner nothing about the creative.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scorer.results import show_interval
from scorer.settings import LabelSettings
from scorer.training.evaluate import Evaluation, Interval, evaluate, interval
from scorer.training.frames import COVER, FRAMES
from scorer.training.labels import class_numbers, class_ranges, label
from scorer.training.posts import POST_FORMATS

# Fewer posts than this in either group (videos, images) and no difference is claimed.
MIN_EACH = 10
GROUPS = ("image", "video")  # what is labelled together: carousels go with the images


@dataclass(frozen=True)
class Engagement:
    """Video posts against image posts (carousels counted with the images): the ratio of their median totals."""

    videos: int
    images: int
    ratio: Interval  # the videos' median likes + comments over the images', with its 95% interval
    differ: bool  # the interval excludes 1: each group is labelled on its own

    def as_dict(self) -> dict[str, object]:
        """The card's engagement entry."""
        return {"videos": self.videos, "images": self.images, "ratio_of_medians": asdict(self.ratio),
                "differ": self.differ}

    def line(self) -> str:
        """One sentence for the card: the figure, and what labelling makes of it."""
        if self.ratio.value is None:
            return (f"not compared: {self.videos} video posts and {self.images} image and carousel posts (at least "
                    f"{MIN_EACH} of each are needed), so all posts are labelled together")
        figure = (f"video posts' median likes + comments is {self.ratio.value:.2f}× the image posts' (95% CI "
                  f"{self.ratio.low:.2f}× to {self.ratio.high:.2f}×; {self.videos} videos, {self.images} images and "
                  "carousels)")
        if self.differ:
            return f"{figure}: they engage differently, so each format is labelled on its own"
        return f"{figure}: no clear difference (the interval includes 1), so all posts are labelled together"


def groups_of(formats: pd.Series) -> np.ndarray:
    """Each post's labelling group: video, or image (images and carousels)."""
    return np.where(formats.to_numpy() == "video", "video", "image")


def compare_engagement(posts: pd.DataFrame, bootstrap: int, seed: int) -> Engagement:
    """Whether video posts engage unlike image posts: the ratio of median likes + comments, bootstrapped per group."""
    group = groups_of(posts["format"])
    totals = (posts["likes"] + posts["comments"]).to_numpy(dtype=float)
    videos, images = totals[group == "video"], totals[group == "image"]
    if min(len(videos), len(images)) < MIN_EACH:
        return Engagement(len(videos), len(images), Interval(None, None, None), False)
    rng = np.random.default_rng(seed)
    # Each group resampled on its own: they are independent samples of different sizes.
    boot_v = np.median(videos[rng.integers(0, len(videos), (bootstrap, len(videos)))], axis=1)
    boot_i = np.median(images[rng.integers(0, len(images), (bootstrap, len(images)))], axis=1)
    log_ratio = interval(float(_log_ratio(np.median(videos), np.median(images))), _log_ratio(boot_v, boot_i))
    assert log_ratio.value is not None and log_ratio.low is not None and log_ratio.high is not None
    ratio = Interval(float(np.exp(log_ratio.value)), float(np.exp(log_ratio.low)), float(np.exp(log_ratio.high)))
    return Engagement(len(videos), len(images), ratio, log_ratio.low > 0 or log_ratio.high < 0)


def _log_ratio(videos: np.ndarray | float, images: np.ndarray | float) -> np.ndarray:
    """log(median videos / median images); a median of 0 counts as 1, so that no post count divides by zero."""
    return np.asarray(np.log(np.maximum(videos, 1)) - np.log(np.maximum(images, 1)))


def card_engagement(model: Path) -> Engagement | None:
    """What the model's card found of its video posts' engagement against its images'; None without a card
    (or one that did not compare them), as for a learner trained elsewhere."""
    try:
        found = json.loads(model.with_suffix(".card.json").read_text(encoding="utf-8"))["formats"]["engagement"]
        ratio = Interval(**found["ratio_of_medians"])
        return Engagement(int(found["videos"]), int(found["images"]), ratio, bool(found["differ"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def label_posts(posts: pd.DataFrame, settings: LabelSettings, engagement: Engagement | None) -> pd.DataFrame:
    """label(): all posts together, or, where videos engage differently, each group with its own cut points."""
    if engagement is None or not engagement.differ:
        return label(posts, settings)
    group = groups_of(posts["format"])
    parts = [label(posts[group == name], own_settings(settings, name, engagement)) for name in GROUPS]
    return pd.concat(parts).sort_index()


def own_settings(settings: LabelSettings, group: str, engagement: Engagement) -> LabelSettings:
    """A group's labelling: fixed thresholds on raw totals are the images', scaled for videos by the median ratio.

    Quantiles are each group's own already, and a rolling median is taken within the group.
    """
    if group != "video" or settings.method != "thresholds" or settings.normalize != "none":
        return settings
    assert engagement.ratio.value is not None
    return dataclasses.replace(settings, thresholds=tuple(round(cut * engagement.ratio.value, 2)
                                                          for cut in settings.thresholds))


def labelling(table: pd.DataFrame, settings: LabelSettings, engagement: Engagement) -> dict[str, object]:
    """The card's labelling entries about formats: whether labels were drawn per format, how, and each one's cuts."""
    if not engagement.differ:
        return {"by_format": False}
    how = {"quantiles": "each format's own quantiles (equal-sized classes among the videos, and among the images "
                        "with the carousels)",
           "thresholds": "the thresholds for the images, and for the videos the same scaled by the ratio of medians"}
    text = how[settings.method]
    if settings.normalize == "rolling_median":
        text = (f"each total divided by the rolling median of its own format's last {settings.window} posts, then "
                + ("each format's own quantiles" if settings.method == "quantiles" else "the thresholds"))
    group = groups_of(table["format"])
    return {"by_format": True, "how": text,
            "per_format": {name: {"thresholds": list(own_settings(settings, name, engagement).thresholds),
                                  "ranges": class_ranges(table[group == name], settings.classes)}
                           for name in GROUPS}}


def counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Posts of each format in the training and validation parts."""
    return {fmt: {"train": int(((table["format"] == fmt) & ~table["is_valid"]).sum()),
                  "valid": int(((table["format"] == fmt) & table["is_valid"]).sum())} for fmt in POST_FORMATS}


def accuracy_by_format(table: pd.DataFrame, valid: pd.DataFrame, probs: np.ndarray, classes: Sequence[str],
                       bootstrap: int, seed: int) -> dict[str, Evaluation]:
    """Accuracy on each format's held-out posts, against always answering that format's most common training class."""
    train = table[~table["is_valid"]]
    y_true = class_numbers(valid["label"], classes)
    found: dict[str, Evaluation] = {}
    for fmt in POST_FORMATS:
        rows = (valid["format"] == fmt).to_numpy()
        if not rows.any():
            continue
        own = train.loc[train["format"] == fmt, "label"]
        taught = (own if len(own) else train["label"]).value_counts().reindex(list(classes), fill_value=0)
        found[fmt] = evaluate(y_true[rows], probs[rows], valid["total"].to_numpy()[rows], classes,
                              int(np.argmax(taught.to_numpy())), bootstrap, seed)
    return found


@dataclass(frozen=True)
class FormatFacts:
    """The card's formats section: counts, what each video post trained on, engagement, and accuracy per format."""

    counts: dict[str, dict[str, int]]
    engagement: Engagement
    frames: list[str]  # the video posts that trained on their frames
    cover: list[dict[str, str]]  # those that trained on their cover only, and why
    accuracy: dict[str, Evaluation]

    def as_dict(self) -> dict[str, object]:
        """Plain data for the card."""
        return {"counts": self.counts, "engagement": {**self.engagement.as_dict(), "verdict": self.engagement.line()},
                "frames": self.frames, "cover": self.cover,
                "accuracy": {fmt: {"posts": ev.n, "accuracy": asdict(ev.accuracy),
                                   "baseline": asdict(ev.baseline_accuracy),
                                   "accuracy_minus_baseline": asdict(ev.accuracy_minus_baseline),
                                   "majority_class": ev.majority_class, "better_than_baseline": ev.better_than_baseline}
                             for fmt, ev in self.accuracy.items()}}

    def headline(self) -> dict[str, str]:
        """The headline's lines about formats where there are video posts; an account of pictures keeps its own."""
        total = {fmt: n["train"] + n["valid"] for fmt, n in self.counts.items()}
        if not total["video"]:
            return {}
        lines = {"Formats": f"{total['image']} images, {total['video']} videos ({len(self.frames)} trained on their "
                            f"frames, {len(self.cover)} on their cover only), {total['carousel']} carousels",
                 "Video against image engagement": self.engagement.line()}
        for fmt, ev in self.accuracy.items():
            lines[f"Accuracy, {fmt} posts"] = (
                f"{show_interval(ev.accuracy, percent=True)} vs "
                f"{show_interval(ev.baseline_accuracy, percent=True, interval=False)} for always {ev.majority_class} "
                f"({ev.n} held out)")
        return lines


def format_facts(table: pd.DataFrame, trained_on: Sequence[str], why_cover: dict[int, str], engagement: Engagement,
                 accuracy: dict[str, Evaluation]) -> FormatFacts:
    """What the card says about formats, from the prepared posts and what each one trained on."""
    videos = [i for i, fmt in enumerate(table["format"]) if fmt == "video"]
    cover = [{"source": str(table["source"].iat[i]),
              "why": f"its video's frames cannot be decoded ({why_cover[i]})" if i in why_cover
              else "only its cover was given (no video beside it)"} for i in videos if trained_on[i] == COVER]
    return FormatFacts(counts(table), engagement, [str(table["source"].iat[i]) for i in videos
                                                   if trained_on[i] == FRAMES], cover, accuracy)
