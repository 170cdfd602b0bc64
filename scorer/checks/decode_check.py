"""The decode check: whether JPEG draft decoding leaves one model's answers alone, decided once per model.

Drafting a JPEG (decoding it at a 1/2, 1/4 or 1/8 DCT scale) is several times faster than a
full decode, but how far it moves the probabilities depends on the model: a confident learner
barely notices, a soft one trained briefly can change its answer. So the first time a model
(by SHA-256) is loaded, each scale is compared with full decoding on fixed calibration images,
sized so that drafting picks that scale, and then on the first real creatives it scores (those
are decoded both ways and scored on the full decode). A scale is used only while mean |Δp| stays
within MEAN_DP_LIMIT and no top-1 answer flips; anything else is decoded at full size. The
finding and its figures are kept in state/decode/<sha256>.json, so later runs skip the check.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from scorer.checks.agreement import Agreement, keep_finding, read_finding, speed_text
from scorer.checks.calibration import CALIBRATION_LIMITS, calibration_jpeg, calibration_sizes
from scorer.decoding.decode import ItemGeometry, decode_bytes

log = logging.getLogger(__name__)

MEAN_DP_LIMIT = 0.002  # largest mean |Δp| against full decoding that a DCT scale may cause
PROBE_CREATIVES = 16  # real drafted creatives checked before the finding is final
SCALES = (2, 4, 8)

Predict = Callable[[np.ndarray], np.ndarray]
R = TypeVar("R")


@dataclass
class ScaleFigures(Agreement):
    """How one DCT scale moved the model's probabilities against full decoding."""

    full_s: float = 0.0  # seconds spent decoding the calibration images at full size ...
    draft_s: float = 0.0  # ... and drafted at this scale: what drafting saves on this machine

    @property
    def passes(self) -> bool:
        """Measured, within the mean |Δp| limit, and no top-1 answer changed."""
        return self.within(MEAN_DP_LIMIT)

    def describe(self, scale: int) -> str:
        """One scale's figures in words."""
        if not self.images:
            return f"1/{scale}: not measured"
        speed = f", decoding {speed_text(self.full_s, self.draft_s)}" if self.full_s and self.draft_s else ""
        return f"1/{scale}: {self.figures()}{speed}"


@dataclass
class DecodeFinding:
    """What the check found for one model, and so the largest DCT scale its JPEGs may be drafted at."""

    sha256: str
    calibration_images: int = 0
    creatives: int = 0
    scales: dict[int, ScaleFigures] = field(default_factory=lambda: {s: ScaleFigures() for s in SCALES})

    @property
    def final(self) -> bool:
        """Enough real creatives have been checked: later runs use the finding as it stands."""
        return self.creatives >= PROBE_CREATIVES

    @property
    def max_scale(self) -> int:
        """The largest scale such that it and every smaller one pass; 1 means full-size decoding."""
        allowed = 1
        for scale in SCALES:
            if not self.scales[scale].passes:
                break
            allowed = scale
        return allowed

    def describe(self) -> str:
        """The finding and its figures, for the log and the report's Model sheet."""
        chosen = "full-size decoding" if self.max_scale == 1 else f"JPEG draft decoding down to 1/{self.max_scale}"
        if not self.final:
            chosen = (f"full-size decoding while the first creatives are checked ({self.creatives} of "
                      f"{PROBE_CREATIVES}), then {chosen} if the figures hold")
        figures = "; ".join(self.scales[s].describe(s) for s in SCALES)
        return (f"auto: {chosen}. Draft vs full decode: {figures} ({self.calibration_images} calibration "
                f"images, {self.creatives} creatives). A scale needs mean |Δp| ≤ {MEAN_DP_LIMIT} and no flips")

    def to_json(self) -> dict[str, Any]:
        """The finding as JSON-ready data."""
        return {"sha256": self.sha256, "calibration_images": self.calibration_images, "creatives": self.creatives,
                "max_scale": self.max_scale, "scales": {str(s): dataclasses.asdict(f) for s, f in self.scales.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DecodeFinding:
        """Read back what to_json wrote."""
        scales = {int(s): ScaleFigures(**f) for s, f in data["scales"].items()}
        return cls(data["sha256"], int(data["calibration_images"]), int(data["creatives"]), scales)


def calibrate(geometry: ItemGeometry, sha256: str, predict: Predict) -> DecodeFinding:
    """Compare each DCT scale with full decoding on the calibration images."""
    finding = DecodeFinding(sha256)
    probing = dataclasses.replace(geometry, probe=True, max_scale=8)
    detail = (int(geometry.size[0] * 0.35), int(geometry.size[1] * 0.35))  # texture about 3 model pixels wide
    for scale in SCALES:
        exact, drafted = [], []
        figures = finding.scales[scale]
        for k, size in enumerate(calibration_sizes(geometry, scale)):
            jpeg = calibration_jpeg(size, detail, 100 * scale + k)
            decoded = decode_bytes(jpeg, 0.0, probing, CALIBRATION_LIMITS, 0)
            assert decoded.pixels is not None and decoded.probe is not None and decoded.probe[0] == scale
            exact.append(decoded.pixels)
            drafted.append(decoded.probe[1])
            figures.full_s += _decode_seconds(jpeg, dataclasses.replace(geometry, max_scale=1))
            figures.draft_s += _decode_seconds(jpeg, dataclasses.replace(geometry, max_scale=scale))
        finding.scales[scale].add(predict(np.stack(exact)), predict(np.stack(drafted)))
        finding.calibration_images += len(exact)
    return finding


def _decode_seconds(jpeg: bytes, geometry: ItemGeometry) -> float:
    started = time.perf_counter()
    decode_bytes(jpeg, 0.0, geometry, CALIBRATION_LIMITS, 0)
    return time.perf_counter() - started


class DecodeCheck:
    """One model's decode mode: chooses how each file is decoded and learns from the first creatives."""

    def __init__(self, geometry: ItemGeometry, mode: str, finding: DecodeFinding | None = None,
                 store: Path | None = None, predict: Predict | None = None) -> None:
        """`predict`: the model's exact probabilities (fp32), for drafted creatives that `observe` is given."""
        self.mode = mode
        self.finding = finding
        self._geometry = geometry
        self._store = store
        self._predict = predict
        self._current = self._decided()

    @property
    def drafts(self) -> bool:
        """Whether this model's JPEGs are (or, once the first creatives agree, will be) drafted."""
        if self.mode != "auto" or self.finding is None:
            return self.mode == "fast"
        return self.finding.max_scale > 1

    def _decided(self) -> ItemGeometry:
        if self.mode == "exact":
            return dataclasses.replace(self._geometry, max_scale=1)
        if self.mode == "fast" or self.finding is None:
            return dataclasses.replace(self._geometry, max_scale=8)
        if not self.finding.final:  # probation: score on full decodes, draft beside them to compare
            return dataclasses.replace(self._geometry, max_scale=1, probe=True)
        return dataclasses.replace(self._geometry, max_scale=self.finding.max_scale)

    def geometry(self) -> ItemGeometry:
        """How the next file handed to a decoder is decoded."""
        return self._current

    def describe(self) -> str:
        """The mode in use and why, for the log and the report."""
        if self.finding is not None:
            return self.finding.describe()
        if self.mode == "exact":
            return "exact: full-size decoding (images.decode), no check"
        return "fast: JPEG draft decoding down to 1/8 (images.decode), not checked against full decoding"

    def observe(self, exact: np.ndarray, probes: Sequence[tuple[int, np.ndarray]]) -> None:
        """Add creatives decoded both ways: probabilities from full decodes, (scale, drafted pixels).

        The drafted pixels are run through the exact predictor the check was opened with; `describe` tells
        the mode and figures as they stand after them.
        """
        if self.finding is None or self.finding.final or not probes:
            return
        predict = self._predict
        if predict is None:
            raise ValueError("the decode check was opened without a predictor: "
                             "open it with load_or_measure_decode_check()")
        for scale in SCALES:
            rows = [i for i, (s, _) in enumerate(probes) if s == scale]
            if rows:
                drafted = predict(np.stack([probes[i][1] for i in rows]))
                self.finding.scales[scale].add(exact[rows], drafted)
        self.finding.creatives += len(probes)
        self._current = self._decided()
        if self.finding.final:
            log.info("decode check finished for model %s: %s", self.finding.sha256[:12], self.describe())
        self._save()

    def _save(self) -> None:
        if self._store is not None and self.finding is not None:
            keep_finding(self._store, self.finding.to_json(), "decode check")


def load_or_measure_decode_check(geometry: ItemGeometry, mode: str, sha256: str, state: Path,
                                 predict: Predict) -> DecodeCheck:
    """The model's decode check: read from state/decode/, or measured now on the calibration images."""
    if mode != "auto":
        check = DecodeCheck(geometry, mode, predict=predict)
        log.info("decoding: %s", check.describe())
        return check
    store = state / "decode" / f"{sha256}.json"
    finding = read_finding(store, sha256, "decode check", DecodeFinding.from_json)
    fresh, how = finding is None, f"kept in {store}"
    if finding is None:
        started = time.perf_counter()
        finding = calibrate(geometry, sha256, predict)
        how = f"measured in {time.perf_counter() - started:.1f} s"
    check = DecodeCheck(geometry, mode, finding, store, predict)
    if fresh:
        check._save()
    log.info("decoding (%s): %s", how, check.describe())
    return check


