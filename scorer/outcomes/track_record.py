"""The track record of one model on its launched creatives: figures with bootstrap intervals, and a verdict.

The figures reuse the card's evaluation (scorer.training.evaluate): Spearman of the Engagement score
against real engagement, and accuracy against the majority baseline. Lift and calibration are
resampled the same way, from the same pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from scorer.ledger.schema import Pair
from scorer.results import Scored
from scorer.training.card import show_interval
from scorer.training.evaluate import Interval, evaluate, interval

GUESS = "no better than a guess on launched creatives: retrain with `scorer train` or stop relying on it"
_BINS = np.linspace(0, 1, 6)  # reliability table: predicted-class probability in fifths
_NONE = Interval(None, None, None)


@dataclass(frozen=True)
class Launched:
    """A recorded pair with the creative's scored result beside it."""

    pair: Pair
    scored: Scored

    @property
    def counted(self) -> bool:
        """Forward evidence: posted after the creative was scored (a post without a date cannot tell)."""
        return self.pair.posted_at is not None and self.pair.posted_at >= self.scored.scored_at


@dataclass(frozen=True)
class TrackRecord:
    """What launched posts say about one model's predictions."""

    model_sha256: str
    matched: int
    mature: int
    early: int
    not_posted: int
    unmatched_posts: int
    spearman: Interval
    accuracy: Interval
    baseline_accuracy: Interval
    lift: Interval
    calibration: list[dict[str, Any]]
    verdict: str
    pairs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def no_better_than_guess(self) -> bool:
        """The verdict is a guess's, on enough pairs to say so."""
        return self.verdict == GUESS

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for --json, the model card and the ledger; with the headline the reports show."""
        return {**asdict(self), "headline": headline(self), "no_better_than_guess": self.no_better_than_guess}


def figures(launched: Sequence[Launched], classes: Sequence[str], bootstrap: int, seed: int
            ) -> dict[str, Any]:
    """Spearman, accuracy, its baseline, lift and the reliability table of mature pairs, with 95% intervals."""
    k = len(classes)
    if len(launched) < 3:
        return {"spearman": _NONE, "accuracy": _NONE, "baseline_accuracy": _NONE, "lift": _NONE, "calibration": []}
    probs = np.array([item.scored.probs for item in launched])
    values = np.array([item.pair.value for item in launched], dtype=float)
    truth = np.array([list(classes).index(item.pair.label) if item.pair.label in classes else -1
                      for item in launched])
    majority = int(np.bincount(truth[truth >= 0], minlength=k).argmax()) if (truth >= 0).any() else 0
    ev = evaluate(np.where(truth >= 0, truth, majority), probs, values, classes, majority, bootstrap, seed)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(launched), size=(bootstrap, len(launched)))
    scores = probs @ np.arange(k) * 100 / (k - 1)
    lift = interval(float(_lift(scores[None, :], values[None, :])[0]), _lift(scores[idx], values[idx]))
    return {"spearman": ev.spearman, "accuracy": ev.accuracy, "baseline_accuracy": ev.baseline_accuracy,
            "lift": lift, "calibration": _calibration(probs, truth, idx)}


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


def pair_row(item: Launched, counted: bool) -> dict[str, Any]:
    """One pair as --json and the Track record sheet list it; `counted`: among the mature forward pairs."""
    p, s = item.pair, item.scored
    return {"post": p.post, "creative": s.name, "creative_sha256": p.creative, "similarity": round(p.similarity, 4),
            "posted_at": p.posted_at, "scored_at": s.scored_at, "predicted_class": s.predicted,
            "predicted_score": round(s.score, 2), "total": p.total, "real_class": p.label,
            "counted": counted}


def headline(record: TrackRecord) -> dict[str, str]:
    """The track record's few lines, as display strings (console, reports, the web page)."""
    return {
        "Verdict": record.verdict,
        "Launched creatives": f"{record.matched} matched, {record.mature} mature and counted, "
                              f"{record.early} posted before they were scored (not counted)",
        "Spearman (score vs real engagement)": show_interval(record.spearman),
        "Accuracy": show_interval(record.accuracy, percent=True),
        "Baseline": show_interval(record.baseline_accuracy, percent=True, interval=False),
        "Lift (top third vs bottom third)": show_interval(record.lift),
        "Not posted": f"{record.not_posted} scored creatives not found among the posts",
    }
