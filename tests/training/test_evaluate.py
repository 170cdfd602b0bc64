"""Evaluation: metrics agree with scikit-learn, and the verdict only claims what the interval supports."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score

from scorer.results import engagement_score
from scorer.training.evaluate import evaluate, scores_of

CLASSES = ("Low", "Neutral", "High")


def _case(n: int, correct: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True classes, probabilities right about `correct` of the time, and totals that follow the classes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    probs = rng.dirichlet([1, 1, 1], n)
    right = rng.random(n) < correct
    probs[right, y[right]] += 3
    probs /= probs.sum(axis=1, keepdims=True)
    totals = y * 4000 + rng.integers(0, 4000, n)
    return y, probs, totals


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_equal_scikit_learn(seed: int) -> None:
    y, probs, totals = _case(80, 0.6, seed)
    ev = evaluate(y, probs, totals, CLASSES, majority=1, bootstrap=200, seed=0)
    pred = probs.argmax(axis=1)
    assert ev.n == 80
    assert ev.accuracy.value == pytest.approx(accuracy_score(y, pred))
    assert ev.baseline_accuracy.value == pytest.approx(np.mean(y == 1))
    assert ev.balanced_accuracy.value == pytest.approx(balanced_accuracy_score(y, pred))
    assert ev.macro_f1.value == pytest.approx(f1_score(y, pred, average="macro"))
    assert ev.within_one_accuracy.value == pytest.approx(np.mean(np.abs(y - pred) <= 1))
    assert ev.confusion == confusion_matrix(y, pred, labels=[0, 1, 2]).tolist()
    scores = [engagement_score(p) for p in probs]
    assert list(scores_of(probs)) == pytest.approx(scores)
    assert ev.spearman.value == pytest.approx(pd.Series(scores).corr(pd.Series(totals), method="spearman"))
    for iv in (ev.accuracy, ev.balanced_accuracy, ev.macro_f1, ev.within_one_accuracy, ev.spearman):
        assert iv.low is not None and iv.high is not None and iv.value is not None
        assert iv.low <= iv.value <= iv.high


def test_a_good_model_is_called_better_than_the_majority_class() -> None:
    y, probs, totals = _case(60, 0.9, seed=3)
    ev = evaluate(y, probs, totals, CLASSES, majority=2, bootstrap=1000, seed=0)
    assert ev.better_than_baseline
    assert ev.accuracy_minus_baseline.low is not None and ev.accuracy_minus_baseline.low > 0
    assert ev.verdict.startswith("better than always answering High: accuracy ")


@pytest.mark.parametrize("seed", range(5))
def test_guessing_is_not_called_better(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, 40)
    probs = rng.dirichlet([1, 1, 1], 40)
    ev = evaluate(y, probs, rng.integers(0, 9000, 40), CLASSES, majority=1, bootstrap=1000, seed=0)
    assert not ev.better_than_baseline
    assert ev.verdict.startswith("not better than baseline: accuracy ")
    assert ev.verdict.endswith("for always answering Neutral")


def test_always_answering_the_majority_is_exactly_the_baseline() -> None:
    y = np.array([1] * 30 + [0] * 10 + [2] * 10)
    probs = np.tile([0.2, 0.6, 0.2], (50, 1))
    ev = evaluate(y, probs, np.arange(50), CLASSES, majority=1, bootstrap=500, seed=0)
    assert ev.accuracy.value == ev.baseline_accuracy.value == 0.6
    assert ev.accuracy_minus_baseline.low == ev.accuracy_minus_baseline.high == 0
    assert not ev.better_than_baseline
    assert ev.spearman.value is None, "a constant score has no rank correlation"
    assert re.fullmatch(r"not better than baseline: accuracy 60% \(95% CI \d\d% to \d\d%\) vs 60% "
                        r"for always answering Neutral", ev.verdict)


def test_intervals_are_reproducible_with_the_seed() -> None:
    y, probs, totals = _case(50, 0.6, seed=4)
    first = evaluate(y, probs, totals, CLASSES, majority=0, bootstrap=300, seed=5)
    assert first == evaluate(y, probs, totals, CLASSES, majority=0, bootstrap=300, seed=5)
    assert first.spearman != evaluate(y, probs, totals, CLASSES, majority=0, bootstrap=300, seed=6).spearman
