"""What the engine needs from its collaborators, each a protocol that the real one and a test's fake both meet:
the classifier, the evidence index, the advisor, Grad-CAM and the decoding pool; and the enrichment they make."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from scorer.context.plan import Plan
from scorer.decoding.decode import Decoded, ItemGeometry
from scorer.errors import ImageError
from scorer.results import Advice, Lookalikes


class Predictor(Protocol):
    """What the engine needs from a classifier: scorer.scoring.classifier.Classifier, or a test's fake."""

    classes: tuple[str, ...]
    geometry: ItemGeometry | None  # None: transforms the fast engine does not know, so files go to predict_files
    batch_size: int

    def predict_with_embedding(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K), lowest class first, for uint8 pixels (N, H, W, 3), and the embedding (N, D) of
        the same forward pass, None for a model that gives none."""
        ...

    def predict_files(self, files: list[Path]) -> np.ndarray:
        """Probabilities (N, K) for files, the learner decoding them itself (geometry None)."""
        ...


class LookalikeSearch(Protocol):
    """What the engine needs from an evidence index (see scorer.evidence.index.EvidenceIndex)."""

    def lookup(self, embedding: np.ndarray, scores: np.ndarray) -> list[Lookalikes]: ...


class AdviceSource(Protocol):
    """What the engine needs for posting-time advice (see scorer.context.advice.Advisor)."""

    @property
    def in_use(self) -> bool: ...

    def advise(self, embedding: np.ndarray | None, plans: Sequence[Plan | None]) -> list[tuple[Advice | None, str]]: ...


class Explain(Protocol):
    """What the engine needs from Grad-CAM (see scorer.evidence.gradcam.Explainer)."""

    def overlays(self, pixels: np.ndarray, classes: Sequence[int] | None = None) -> list[bytes]: ...


@dataclass(frozen=True)
class Enrichment:
    """Evidence for the report, beyond the prediction: look-alike past posts and where the model looked."""

    index: LookalikeSearch | None = None
    explainer: Explain | None = None
    #: Grad-CAM runs for calls of score_items with at most this many items.
    explain_up_to: int = 0
    advisor: AdviceSource | None = None


class Decoder(Protocol):
    """What the engine needs from a decoding pool (see scorer.decoding.pool.DecodePool)."""

    def imap(
        self, paths: Sequence[Path], ahead: int = ..., stop: Callable[[], bool] = ...,
        geometry: Callable[[], ItemGeometry | None] | None = ...,
    ) -> Iterator[tuple[Path, Decoded | ImageError]]: ...

    def close(self) -> None: ...
