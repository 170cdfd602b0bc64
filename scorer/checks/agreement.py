"""What the per-model checks share: how far answers moved (Agreement), how much time the faster way saved, and
their records kept in state/."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from scorer.fsutil import atomic_write

log = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass
class Agreement:
    """How far one way of computing a model's probabilities moved them from the exact way."""

    images: int = 0
    sum_abs_dp: float = 0.0
    values: int = 0
    max_abs_dp: float = 0.0
    flips: int = 0

    @property
    def mean_abs_dp(self) -> float:
        """Mean |Δp| over every image and class seen so far."""
        return self.sum_abs_dp / self.values if self.values else 0.0

    def within(self, mean_limit: float) -> bool:
        """Measured, within the mean |Δp| limit, and no top-1 answer changed."""
        return self.images > 0 and self.mean_abs_dp <= mean_limit and self.flips == 0

    def add(self, exact: np.ndarray, other: np.ndarray) -> None:
        """Count probabilities (N, K) computed the exact way against those computed the other way."""
        diff = np.abs(exact - other)
        self.images += len(diff)
        self.sum_abs_dp += float(diff.sum())
        self.values += diff.size
        self.max_abs_dp = max(self.max_abs_dp, float(diff.max()))
        self.flips += int((exact.argmax(1) != other.argmax(1)).sum())

    def figures(self) -> str:
        """The agreement in words."""
        return (f"mean |Δp| {self.mean_abs_dp:.4f}, max {self.max_abs_dp:.4f}, "
                f"{self.flips} top-1 flips on {self.images} images")


def speed_text(usual: float, other: float) -> str:
    """How the other way's time compares with the usual way's, in words: "2.0× faster", "2.0× slower", "as fast"."""
    ratio = usual / other
    if f"{ratio:.1f}" == "1.0":
        return "as fast"
    # "0.5× faster" reads as faster: a slower way is said to be slower, by how much
    return f"{ratio:.1f}× faster" if ratio > 1 else f"{1 / ratio:.1f}× slower"


def read_finding(store: Path, sha256: str, what: str, parse: Callable[[dict[str, Any]], R]) -> R | None:
    """A per-model check's record kept in state/, or None when it is missing, unreadable or another model's."""
    try:
        data = json.loads(store.read_text(encoding="utf-8"))
        return parse(data) if data["sha256"] == sha256 else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s %s is unreadable (%s): checking again", what, store, exc)
        return None


def keep_finding(store: Path, data: dict[str, Any], what: str) -> None:
    """Keep a per-model check's record in state/, written whole or not at all."""
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(store, json.dumps(data, indent=2))
    except OSError as exc:  # the check is repeated next time; scoring goes on
        log.warning("cannot keep the %s in %s (%s): it will run again next time", what, store, exc)
