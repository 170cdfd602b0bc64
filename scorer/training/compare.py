"""Ways of predicting side by side on the held-out posts: the index's kNN estimate, the classifier, the baseline.

Each is judged by accuracy and by the Spearman correlation of its estimate with total
engagement, with bootstrap intervals over the same resamples, so differences are paired.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from scorer.training.evaluate import Interval, interval, spearman


@dataclass(frozen=True)
class Way:
    """One way of predicting: its class for each held-out post and the estimate ranked against total engagement."""

    name: str
    predicted: np.ndarray
    estimate: np.ndarray | None


@dataclass(frozen=True)
class Comparison:
    """Accuracy and Spearman of each way, and which one the held-out posts support best."""

    accuracy: dict[str, Interval]
    spearman: dict[str, Interval]
    best: str
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        """Plain data for the model card."""
        return asdict(self)

    def lines(self) -> dict[str, str]:
        """One display line per way, and the verdict, for the card's headline and the Model sheet."""
        rows = {f"{name}": f"accuracy {_pct(self.accuracy[name])}, Spearman {_num(self.spearman[name])}"
                for name in self.accuracy}
        return {**rows, "Best supported": self.verdict}


def compare(ways: list[Way], y_true: np.ndarray, totals: np.ndarray, bootstrap: int, seed: int) -> Comparison:
    """Judge each way on the same bootstrap resamples of the held-out posts."""
    y_true = np.asarray(y_true, dtype=int)
    totals = np.asarray(totals, dtype=float)
    n = len(y_true)
    idx = np.random.default_rng(seed).integers(0, n, size=(bootstrap, n))
    correct = {w.name: (np.asarray(w.predicted) == y_true).astype(float) for w in ways}
    accuracy = {name: interval(float(c.mean()), c[idx].mean(axis=1)) for name, c in correct.items()}
    rho: dict[str, Interval] = {}
    for w in ways:
        if w.estimate is None:
            rho[w.name] = Interval(None, None, None)
            continue
        est = np.asarray(w.estimate, dtype=float)
        rho[w.name] = interval(float(spearman(est[None, :], totals[None, :])[0]), spearman(est[idx], totals[idx]))
    best = max(correct, key=lambda name: (accuracy[name].value or 0.0, rho[name].value or -1.0))
    tied = [name for name in correct if name != best and accuracy[name].value == accuracy[best].value]
    return Comparison(accuracy, rho, best, _verdict(best, tied, correct, idx))


def _verdict(best: str, tied: list[str], correct: dict[str, np.ndarray], idx: np.ndarray) -> str:
    """Best supported when its accuracy minus each other's has a paired 95% interval above 0."""
    overlapping = []
    for name, c in correct.items():
        if name == best:
            continue
        gain = correct[best][idx].mean(axis=1) - c[idx].mean(axis=1)
        if np.percentile(gain, 2.5) <= 0:
            overlapping.append(name)
    if not overlapping:
        return f"{best}: its accuracy beats every other way's (paired 95% intervals exclude 0)"
    lead = (f"{best} ties {' and '.join(tied)} on accuracy and ranks posts better (higher Spearman)" if tied
            else f"{best} has the highest accuracy")
    return f"none clearly: {lead}, but not clearly above {' or '.join(overlapping)} (paired 95% intervals include 0)"


def _pct(iv: Interval) -> str:
    return "n/a" if iv.value is None else f"{iv.value:.0%} (95% CI {iv.low:.0%} to {iv.high:.0%})"


def _num(iv: Interval) -> str:
    return "n/a" if iv.value is None else f"{iv.value:.2f} (95% CI {iv.low:.2f} to {iv.high:.2f})"
