"""Honest evaluation on the held-out posts: every metric next to the majority-class baseline, with bootstrap intervals.

All metrics come from confusion matrices, so one resample of the validation rows gives
every metric at once. Balanced accuracy and macro-F1 follow scikit-learn's definitions:
recall averaged over the classes present, and F1 averaged over the classes seen in
the truth or the predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from scorer.results import Interval as Interval  # re-exported: the training room takes it from here
from scorer.results import engagement_score

# Resamples processed together: bounds memory at about chunk × rows integers.
_CHUNK = 100


@dataclass(frozen=True)
class Evaluation:
    """What the held-out posts say about the learner."""

    classes: tuple[str, ...]
    n: int
    majority_class: str
    accuracy: Interval
    baseline_accuracy: Interval
    accuracy_minus_baseline: Interval
    balanced_accuracy: Interval
    macro_f1: Interval
    within_one_accuracy: Interval
    spearman: Interval
    confusion: list[list[int]]
    bootstrap: int
    better_than_baseline: bool
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the model card."""
        return asdict(self)


def scores_of(probs: np.ndarray) -> np.ndarray:
    """The Engagement score of each row of probabilities (lowest class first)."""
    return np.array([engagement_score(row) for row in probs])


def evaluate(y_true: np.ndarray, probs: np.ndarray, totals: np.ndarray, classes: Sequence[str],
             majority: int, bootstrap: int, seed: int) -> Evaluation:
    """Metrics of the predictions `probs` (lowest class first) against the true class indices, with intervals.

    `majority` is the most common class in the training posts: always answering it is the baseline.
    """
    k = len(classes)
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(probs).argmax(axis=1)
    scores = scores_of(probs)
    totals = np.asarray(totals, dtype=float)
    n = len(y_true)
    point = _metrics(_confusions(y_true * k + y_pred, np.arange(n)[None, :], k), majority)
    point["spearman"] = spearman(scores[None, :], totals[None, :])
    rng = np.random.default_rng(seed)
    resampled: dict[str, list[np.ndarray]] = {name: [] for name in point}
    for start in range(0, bootstrap, _CHUNK):
        idx = rng.integers(0, n, size=(min(_CHUNK, bootstrap - start), n))
        for name, values in _metrics(_confusions(y_true * k + y_pred, idx, k), majority).items():
            resampled[name].append(values)
        resampled["spearman"].append(spearman(scores[idx], totals[idx]))
    iv = {name: interval(point[name][0], np.concatenate(resampled[name])) for name in point}
    gain = iv["gain"]
    better = gain.low is not None and gain.low > 0
    return Evaluation(
        classes=tuple(classes), n=n, majority_class=classes[majority],
        accuracy=iv["accuracy"], baseline_accuracy=iv["baseline"], accuracy_minus_baseline=gain,
        balanced_accuracy=iv["balanced"], macro_f1=iv["macro_f1"], within_one_accuracy=iv["within_one"],
        spearman=iv["spearman"], confusion=_confusions(y_true * k + y_pred, np.arange(n)[None, :], k)[0].tolist(),
        bootstrap=bootstrap, better_than_baseline=better,
        verdict=_verdict(better, iv["accuracy"], iv["baseline"], classes[majority]),
    )


def _confusions(codes: np.ndarray, idx: np.ndarray, k: int) -> np.ndarray:
    """Confusion matrices (B, K, K), rows true and columns predicted, one per row of resample indices."""
    b = idx.shape[0]
    flat = (np.arange(b)[:, None] * k * k + codes[idx]).ravel()
    return np.bincount(flat, minlength=b * k * k).reshape(b, k, k)


def _metrics(cm: np.ndarray, majority: int) -> dict[str, np.ndarray]:
    n = cm.sum(axis=(1, 2)).astype(float)
    tp = np.diagonal(cm, axis1=1, axis2=2).astype(float)
    truth, predicted = cm.sum(axis=2).astype(float), cm.sum(axis=1).astype(float)
    k = cm.shape[1]
    near = np.abs(np.arange(k)[:, None] - np.arange(k)[None, :]) <= 1
    with np.errstate(divide="ignore", invalid="ignore"):
        accuracy = tp.sum(axis=1) / n
        baseline = truth[:, majority] / n
        recall = np.where(truth > 0, tp / truth, np.nan)
        f1 = np.where(truth + predicted > 0, 2 * tp / (truth + predicted), np.nan)
        return {
            "accuracy": accuracy,
            "baseline": baseline,
            "gain": accuracy - baseline,
            "balanced": np.nanmean(recall, axis=1),
            "macro_f1": np.nanmean(f1, axis=1),
            "within_one": (cm * near).sum(axis=(1, 2)) / n,
        }


def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise Spearman correlation: Pearson on ranks, ties given their average rank; NaN when a row is constant."""
    rx = pd.DataFrame(x).rank(axis=1).to_numpy(copy=True)
    ry = pd.DataFrame(y).rank(axis=1).to_numpy(copy=True)
    rx -= rx.mean(axis=1, keepdims=True)
    ry -= ry.mean(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (rx * ry).sum(axis=1) / np.sqrt((rx**2).sum(axis=1) * (ry**2).sum(axis=1))
    return np.where(np.isfinite(r), r, np.nan)


def interval(value: float, samples: np.ndarray) -> Interval:
    samples = samples[np.isfinite(samples)]
    if not np.isfinite(value) or len(samples) == 0:
        return Interval(None, None, None)
    low, high = np.percentile(samples, [2.5, 97.5])
    return Interval(float(value), float(low), float(high))


def _verdict(better: bool, accuracy: Interval, baseline: Interval, majority: str) -> str:
    assert accuracy.value is not None and baseline.value is not None
    acc = f"accuracy {accuracy.value:.0%} (95% CI {accuracy.low:.0%} to {accuracy.high:.0%})"
    if better:
        return f"better than always answering {majority}: {acc} vs {baseline.value:.0%}"
    return f"not better than baseline: {acc} vs {baseline.value:.0%} for always answering {majority}"
