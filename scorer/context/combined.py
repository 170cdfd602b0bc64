"""The combined model: multinomial logistic regression on the image embedding (PCA-reduced) and the context signals.

Why logistic regression (scikit-learn, already installed with fastai): one account has a few
hundred posts, so a linear model on an 8-component embedding and one-hot hour and weekday is
hard to overfit (strong L2), gives calibrated probabilities for the Engagement score, is deterministic, and
its parameters are a few numbers. They are written as plain JSON (`<stem>.context.json` beside
the model), so loading it runs no code, unlike a pickle; it is pinned like the evidence index.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from scorer.context.signals import Account
from scorer.errors import ModelError
from scorer.fsutil import atomic_write

#: Most principal components of the embedding that the model sees.
COMPONENTS = 8
#: Inverse L2 strength: strong, since one account has a few hundred posts for about fifty inputs.
_C = 0.1
#: Standardised inputs are clipped to this many standard deviations.
_CLIP = 4.0
_FORMAT = 1


def context_path(model: Path) -> Path:
    """Where the combined model of a learner lives: `<stem>.context.json` beside it."""
    return model.with_name(model.stem + ".context.json")


@dataclass(frozen=True)
class Linear:
    """A fitted model's parameters: embedding PCA (when it sees the image), standardisation, weights per class."""

    pca_mean: np.ndarray | None
    components: np.ndarray | None
    x_mean: np.ndarray
    x_scale: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray

    def inputs(self, embeddings: np.ndarray | None, context: np.ndarray | None) -> np.ndarray:
        """The standardised input rows, from the parts this model sees."""
        parts = []
        if self.components is not None and embeddings is not None:
            parts.append((np.asarray(embeddings, dtype=float) - self.pca_mean) @ self.components.T)
        if context is not None:
            parts.append(np.asarray(context, dtype=float))
        # Clipped as in training: a caption far longer than any seen must not swamp everything else.
        rows: np.ndarray = np.clip((np.hstack(parts) - self.x_mean) / self.x_scale, -_CLIP, _CLIP)
        return rows

    def predict(self, embeddings: np.ndarray | None, context: np.ndarray | None) -> np.ndarray:
        """Class probabilities (N, K), lowest class first."""
        logits = self.inputs(embeddings, context) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        odds = np.exp(logits)
        probs: np.ndarray = odds / odds.sum(axis=1, keepdims=True)
        return probs

    def as_dict(self) -> dict[str, Any]:
        """Plain lists for JSON."""
        return {k: None if v is None else np.asarray(v).tolist() for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Linear:
        """The parameters `as_dict` wrote."""
        def array(key: str) -> np.ndarray:
            return np.asarray(data[key], dtype=float)

        pca = data["components"] is not None
        return cls(array("pca_mean") if pca else None, array("components") if pca else None, array("x_mean"),
                   array("x_scale"), array("coef"), array("intercept"))


def fit(embeddings: np.ndarray | None, context: np.ndarray | None, y: np.ndarray, k: int, seed: int) -> Linear:
    """Fit on the training posts: `y` holds class indices 0..k-1; a class never seen gets probability 0."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    pca_mean = components = None
    parts = []
    if embeddings is not None:
        n_comp = max(1, min(COMPONENTS, len(embeddings) - 1, embeddings.shape[1]))
        pca = PCA(n_components=n_comp, random_state=seed).fit(embeddings)
        pca_mean, components = pca.mean_, pca.components_
        parts.append((embeddings - pca_mean) @ components.T)
    if context is not None:
        parts.append(context)
    x = np.hstack(parts)
    x_mean, x_scale = x.mean(axis=0), x.std(axis=0)
    x_scale[x_scale == 0] = 1.0
    coef, intercept = np.zeros((k, x.shape[1])), np.full(k, -1e9)
    seen = np.unique(y)
    if len(seen) == 1:
        intercept[seen[0]] = 0.0
    else:
        z = np.clip((x - x_mean) / x_scale, -_CLIP, _CLIP)
        lr = LogisticRegression(C=_C, max_iter=2000, random_state=seed).fit(z, y)
        rows = lr.coef_ if len(seen) > 2 else np.vstack([-lr.coef_[0] / 2, lr.coef_[0] / 2])
        bias = lr.intercept_ if len(seen) > 2 else np.array([-lr.intercept_[0] / 2, lr.intercept_[0] / 2])
        coef[lr.classes_], intercept[lr.classes_] = rows, bias
    return Linear(pca_mean, components, x_mean, x_scale, coef, intercept)


@dataclass(frozen=True)
class CombinedModel:
    """The combined model of one learner, whether the card made it the default, and the account it knows."""

    classes: tuple[str, ...]
    linear: Linear
    use: bool
    verdict: str
    account: Account
    timezone: str
    model_sha256: str


def write_context(path: Path, model: CombinedModel) -> None:
    """Write the combined model as JSON, atomically."""
    data = {"format": _FORMAT, "classes": list(model.classes), "use": model.use, "verdict": model.verdict,
            "timezone": model.timezone, "model_sha256": model.model_sha256,
            "account": {"last_posted": model.account.last_posted.isoformat(),
                        "typical_gap": model.account.typical_gap, "rolling_median": model.account.rolling_median},
            "linear": model.linear.as_dict()}
    atomic_write(path, json.dumps(data))


def read_context(path: Path, data: bytes) -> CombinedModel:
    """The combined model from the bytes read (and checked) from `path`."""
    try:
        raw = json.loads(data)
        saved = raw["account"]
        account = Account(datetime.fromisoformat(saved["last_posted"]), float(saved["typical_gap"]),
                          float(saved["rolling_median"]))
        return CombinedModel(tuple(raw["classes"]), Linear.from_dict(raw["linear"]), bool(raw["use"]),
                            str(raw["verdict"]), account, str(raw["timezone"]), str(raw["model_sha256"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelError(f"combined model {path} cannot be read ({type(exc).__name__}): train again with "
                         "`scorer train`, or delete it to score image-only") from None
