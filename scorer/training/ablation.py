"""Does posting time and caption help? Image alone, context alone, both, and the baseline, on the held-out posts.

All three models are the same kind (scorer.context.combined) on the same time-ordered split,
so the only difference is what they see. The combined model becomes the default only when
its accuracy minus image alone's has a paired bootstrap 95% interval above 0.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from scorer.context.combined import CombinedModel, context_path, fit, write_context
from scorer.context.signals import SIGNALS, account_of, design, post_signals, zone
from scorer.fsutil import sha256_file
from scorer.model.integrity import remember_pin
from scorer.settings import Settings
from scorer.training.compare import Comparison, Way, compare
from scorer.training.evaluate import Interval, interval, scores_of
from scorer.training.index import IndexRun
from scorer.training.labels import class_numbers

log = logging.getLogger(__name__)

IMAGE, CONTEXT, COMBINED = "Image alone", "Context alone (time, caption)", "Image + context"


@dataclass(frozen=True)
class ContextRun:
    """The ablation's figures and verdict, and the combined model written beside the learner."""

    path: Path | None
    sha256: str | None
    comparison: Comparison | None
    gain: Interval
    use: bool
    verdict: str

    def as_dict(self) -> dict[str, Any]:
        """The card's context section."""
        return {"file": self.path.name if self.path else None, "sha256": self.sha256, "use": self.use,
                "verdict": self.verdict, "gain": asdict(self.gain), "signals": SIGNALS,
                "comparison": self.comparison.as_dict() if self.comparison else None}

    def line(self) -> str:
        """The card headline's line."""
        return ("combined model in use: " if self.use else "image-only: ") + self.verdict


def skipped(why: str) -> ContextRun:
    """No ablation could be run (no dates, too few posts): scoring stays image-only."""
    return ContextRun(None, None, None, Interval(None, None, None), False, f"not evaluated: {why}")


def ablate(settings: Settings, table: pd.DataFrame, index: IndexRun, model: Path, model_sha: str) -> ContextRun:
    """Fit the three models on the training posts, judge them on the held-out ones, write the combined model.

    Classes are the learner's, as the index names the posts' labels, so the combined model answers in its order.
    """
    if table["posted_at"].isna().any():
        return skipped("some posts have no date (posted_at), so there is no posting time to learn from")
    classes = index.classes
    joined = index.frame[["source", "embedding", "split", "label"]].merge(table.drop(columns="label"), on="source",
                                                                           how="inner")
    train = (joined["split"] == "train").to_numpy()
    valid = ~train
    y = class_numbers(joined["label"], classes)
    if train.sum() < 10 or valid.sum() < 5:
        return skipped(f"{int(train.sum())} training and {int(valid.sum())} held-out posts are too few")
    tz = zone(settings.context.timezone)
    x_ctx = design(post_signals(joined, tz, settings.train.label.window))
    emb = np.stack(joined["embedding"].to_numpy()).astype(float)
    seed, k = settings.train.seed, len(classes)
    fitted = {IMAGE: fit(emb[train], None, y[train], k, seed), CONTEXT: fit(None, x_ctx[train], y[train], k, seed),
              COMBINED: fit(emb[train], x_ctx[train], y[train], k, seed)}
    probs = {IMAGE: fitted[IMAGE].predict(emb[valid], None), CONTEXT: fitted[CONTEXT].predict(None, x_ctx[valid]),
             COMBINED: fitted[COMBINED].predict(emb[valid], x_ctx[valid])}
    majority = int(np.bincount(y[train], minlength=k).argmax())
    ways = [Way(name, p.argmax(axis=1), scores_of(p)) for name, p in probs.items()]
    ways.append(Way(f"Majority baseline (always {classes[majority]})", np.full(int(valid.sum()), majority), None))
    boot = settings.train.bootstrap
    comparison = compare(ways, y[valid], joined.loc[valid, "total"].to_numpy(), boot, seed)
    gain = _paired_gain(probs[COMBINED], probs[IMAGE], y[valid], boot, seed)
    use = gain.low is not None and gain.low > 0
    verdict = _verdict(use, gain)
    log.info("context: %s", verdict)
    path = context_path(model)
    write_context(path, CombinedModel(tuple(classes), fitted[COMBINED], use, verdict,
                                     account_of(table, settings.train.label.window), tz.key, model_sha))
    sha = sha256_file(path)
    remember_pin(settings, path, sha)
    return ContextRun(path, sha, comparison, gain, use, verdict)


def _paired_gain(combined: np.ndarray, image: np.ndarray, y: np.ndarray, bootstrap: int, seed: int) -> Interval:
    """Accuracy of combined minus image alone, on the same resamples as the comparison (same seed)."""
    n = len(y)
    idx = np.random.default_rng(seed).integers(0, n, size=(bootstrap, n))
    diff = (combined.argmax(axis=1) == y).astype(float) - (image.argmax(axis=1) == y).astype(float)
    return interval(float(diff.mean()), diff[idx].mean(axis=1))


def _verdict(use: bool, gain: Interval) -> str:
    assert gain.value is not None
    figures = (f"accuracy {100 * gain.value:+.0f} percentage points over image alone "
               f"(paired 95% CI {100 * (gain.low or 0):+.0f} to {100 * (gain.high or 0):+.0f})")
    if use:
        return f"posting time and caption help: {figures}"
    return f"posting time and caption do not measurably help: {figures}, an interval that reaches 0 or below"
