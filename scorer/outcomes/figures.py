"""A model's track record on its launched creatives: figures with bootstrap intervals, and a verdict.

The figures reuse the card's evaluation (scorer.training.evaluate): Spearman of the Engagement score
against real engagement, and accuracy against the majority baseline. Lift and calibration are
resampled the same way, from the same launches. Each format's launches get the same figures of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np

from scorer.results import Interval
from scorer.track_record import GUESS, FormatRecord, Launch
from scorer.training.evaluate import evaluate, interval
from scorer.training.posts import POST_FORMATS

_BINS = np.linspace(0, 1, 6)  # reliability table: predicted-class probability in fifths
_NONE = Interval(None, None, None)


def figures(counted: Sequence[Launch], classes: Sequence[str], bootstrap: int, seed: int) -> dict[str, Any]:
    """Spearman, accuracy, its baseline, lift and the reliability table of the counted launches, with 95% intervals."""
    k = len(classes)
    if len(counted) < 3:
        return {"spearman": _NONE, "accuracy": _NONE, "baseline_accuracy": _NONE, "lift": _NONE, "calibration": []}
    probs = np.array([launch.creative.probs for launch in counted])
    values = np.array([launch.value for launch in counted], dtype=float)
    truth = np.array([list(classes).index(launch.real_class) if launch.real_class in classes else -1
                      for launch in counted])
    majority = int(np.bincount(truth[truth >= 0], minlength=k).argmax()) if (truth >= 0).any() else 0
    ev = evaluate(np.where(truth >= 0, truth, majority), probs, values, classes, majority, bootstrap, seed)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(counted), size=(bootstrap, len(counted)))
    scores = probs @ np.arange(k) * 100 / (k - 1)
    lift = interval(float(_lift(scores[None, :], values[None, :])[0]), _lift(scores[idx], values[idx]))
    return {"spearman": ev.spearman, "accuracy": ev.accuracy, "baseline_accuracy": ev.baseline_accuracy,
            "lift": lift, "calibration": _calibration(probs, truth, idx)}


def by_format(launches: Sequence[Launch], settled: float, classes: Sequence[str], bootstrap: int, seed: int
              ) -> dict[str, FormatRecord]:
    """Each launched format's figures on its own counted launches (image, video, carousel, those launched)."""
    found = {}
    for fmt in POST_FORMATS:
        own = [launch for launch in launches if launch.format == fmt]
        if own:
            counted = [launch for launch in own if launch.counted(settled)]
            ours = figures(counted, classes, bootstrap, seed)
            found[fmt] = FormatRecord(len(own), len(counted), ours["spearman"], ours["accuracy"],
                                      ours["baseline_accuracy"], ours["lift"])
    return found


def _lift(scores: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Row-wise median real engagement of the top third by score over the bottom third's (NaN when that is 0)."""
    third = max(scores.shape[1] // 3, 1)
    ordered = np.take_along_axis(values, np.argsort(scores, axis=1, kind="stable"), axis=1)
    top, bottom = np.median(ordered[:, -third:], axis=1), np.median(ordered[:, :third], axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(bottom > 0, top / bottom, np.nan)


def _calibration(probs: np.ndarray, truth: np.ndarray, idx: np.ndarray) -> list[dict[str, Any]]:
    """Predicted-class probability against how often that class was the real one, one row per bin that has pairs."""
    confidence, right = probs.max(axis=1), (probs.argmax(axis=1) == truth).astype(float)
    bins = np.clip(np.digitize(confidence, _BINS[1:-1]), 0, len(_BINS) - 2)
    rows = []
    for b in range(len(_BINS) - 1):
        inside = bins == b
        if not inside.any():
            continue
        picked = inside[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            resampled = (right[idx] * picked).sum(axis=1) / picked.sum(axis=1)
        observed = interval(float(right[inside].mean()), resampled)
        rows.append({"bin": f"{_BINS[b]:.1f}-{_BINS[b + 1]:.1f}", "n": int(inside.sum()),
                     "predicted": float(confidence[inside].mean()), "observed": asdict(observed)})
    return rows


def verdict(mature: int, spearman: Interval, min_pairs: int) -> str:
    """The track record in words."""
    if mature < min_pairs:
        return f"too few launched creatives yet ({mature} of {min_pairs})"
    if spearman.low is not None and spearman.low > 0:
        return (f"the ranking agrees with what happened (Spearman {spearman.value:.2f}, "
                f"95% CI {spearman.low:.2f} to {spearman.high:.2f})")
    return GUESS
