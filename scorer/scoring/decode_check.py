"""The decode check: whether JPEG draft decoding leaves one model's answers alone, decided once per model.

Drafting a JPEG (decoding it at a 1/2, 1/4 or 1/8 DCT scale) is several times faster than a
full decode, but how far it moves the probabilities depends on the model: a confident learner
barely notices, a soft one trained briefly can change its answer. So the first time a model
(by SHA-256) is loaded, each scale is compared with full decoding on fixed calibration images,
sized so that drafting picks that scale, and then on the first real creatives it scores (those
are decoded both ways and scored on the full decode). A scale is used only while mean |Δp| stays
within MEAN_DP_LIMIT and no top-1 answer flips; anything else is decoded at full size. The
decision and its figures are kept in state/decode/<sha256>.json, so later runs skip the check.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from scorer.fsutil import atomic_write
from scorer.scoring.decode import ItemGeometry, decode_bytes
from scorer.scoring.vet import ImageLimits

log = logging.getLogger(__name__)

MEAN_DP_LIMIT = 0.002  # largest mean |Δp| against full decoding that a DCT scale may cause
PROBE_CREATIVES = 16  # real drafted creatives checked before the decision is final
SCALES = (2, 4, 8)
_CALIBRATION_LIMITS = ImageLimits(max_pixels=200_000_000, max_decode_bytes=2**31)

Predict = Callable[[np.ndarray], np.ndarray]
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
        speed = f", decoding {self.full_s / self.draft_s:.1f}× faster" if self.full_s and self.draft_s else ""
        return f"1/{scale}: {self.figures()}{speed}"


@dataclass
class DecodeDecision:
    """What the check found for one model, and so the largest DCT scale its JPEGs may be drafted at."""

    sha256: str
    calibration_images: int = 0
    creatives: int = 0
    scales: dict[int, ScaleFigures] = field(default_factory=lambda: {s: ScaleFigures() for s in SCALES})

    @property
    def final(self) -> bool:
        """Enough real creatives have been checked: later runs use the decision as it stands."""
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
        """The decision and its figures, for the log and the report's Model sheet."""
        chosen = "full-size decoding" if self.max_scale == 1 else f"JPEG draft decoding down to 1/{self.max_scale}"
        if not self.final:
            chosen = (f"full-size decoding while the first creatives are checked ({self.creatives} of "
                      f"{PROBE_CREATIVES}), then {chosen} if the figures hold")
        figures = "; ".join(self.scales[s].describe(s) for s in SCALES)
        return (f"auto: {chosen}. Draft vs full decode: {figures} ({self.calibration_images} calibration "
                f"images, {self.creatives} creatives). A scale needs mean |Δp| ≤ {MEAN_DP_LIMIT} and no flips")

    def to_json(self) -> dict[str, Any]:
        """The decision as JSON-ready data."""
        return {"sha256": self.sha256, "calibration_images": self.calibration_images, "creatives": self.creatives,
                "max_scale": self.max_scale, "scales": {str(s): dataclasses.asdict(f) for s, f in self.scales.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DecodeDecision:
        """Read back what to_json wrote."""
        scales = {int(s): ScaleFigures(**f) for s, f in data["scales"].items()}
        return cls(data["sha256"], int(data["calibration_images"]), int(data["creatives"]), scales)


def calibration_jpeg(size: tuple[int, int], detail: tuple[int, int], seed: int) -> bytes:
    """A photo-like JPEG: colour fields with texture at about the model's pixel scale, shapes and sensor noise."""
    rng = np.random.default_rng(seed)
    w, h = size

    def field_at(grid: tuple[int, int], sigma: float) -> Image.Image:
        values = rng.normal(128, sigma, (grid[1], grid[0], 3)).clip(0, 255).astype(np.uint8)
        return Image.fromarray(values, "RGB").resize(size, Image.Resampling.BICUBIC)

    # Layers are added one at a time, so a 20-megapixel image never has more than three copies alive.
    im = ImageChops.add(field_at((6, 6), 50), field_at(detail, 20), offset=-128)
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.uniform(0.05, 0.2) * min(w, h))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    tile = Image.fromarray(rng.normal(128, 8, (256, 256, 3)).clip(0, 255).astype(np.uint8), "RGB")
    noise = Image.new("RGB", size)
    for x in range(0, w, 256):
        for y in range(0, h, 256):
            noise.paste(tile, (x, y))
    im = ImageChops.add(im, noise, offset=-128)
    del noise
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90)
    return out.getvalue()


def calibration_sizes(geometry: ItemGeometry, scale: int) -> list[tuple[int, int]]:
    """A landscape and a portrait size at which drafting to geometry.draft_size picks `scale`."""
    dw, dh = geometry.draft_size
    return [(int(scale * dw * 1.25), int(scale * dh * 1.05)), (int(scale * dw * 1.05), int(scale * dh * 1.3))]


def calibration_pixels(geometry: ItemGeometry, count: int, seed: int) -> np.ndarray:
    """`count` photo-like calibration images of varied sizes and detail, decoded at full size into model input."""
    exact = dataclasses.replace(geometry, max_scale=1, probe=False)
    (w, h), (tw, th) = geometry.draft_size, geometry.size
    pixels = []
    for k in range(count):
        size = (int(w * (1.1 + 0.3 * (k % 3))), int(h * (1.05 + 0.4 * (k % 2))))
        detail = (max(2, int(tw * (0.15 + 0.1 * (k % 4)))), max(2, int(th * (0.15 + 0.1 * (k % 4)))))
        decoded = decode_bytes(calibration_jpeg(size, detail, seed + k), 0.0, exact, _CALIBRATION_LIMITS, 0)
        assert decoded.pixels is not None
        pixels.append(decoded.pixels)
    return np.stack(pixels)


def extreme_pixels(geometry: ItemGeometry, seed: int) -> np.ndarray:
    """Model-sized images at the edges of what creatives hold: black, white, pure primaries, hard-edged
    saturated blocks and single-pixel checks; so that activation ranges set on them cover real creatives."""
    w, h = geometry.size
    rng = np.random.default_rng(seed)
    flat = [np.full((h, w, 3), colour, np.uint8) for colour in
            ((0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0))]
    checks = ((np.indices((h, w)).sum(axis=0) % 2) * 255).astype(np.uint8)
    blocks = rng.choice(np.array([0, 255], np.uint8), (h // 8 + 1, w // 8 + 1, 3))
    blocks = blocks.repeat(8, axis=0).repeat(8, axis=1)[:h, :w]
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.array([1.0, 0.5, 0.0], np.float32)
    ramp = np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8)
    return np.stack([*flat, np.repeat(checks[..., None], 3, axis=2), blocks, ramp])


def calibrate(geometry: ItemGeometry, sha256: str, predict: Predict) -> DecodeDecision:
    """Compare each DCT scale with full decoding on the calibration images."""
    decision = DecodeDecision(sha256)
    probing = dataclasses.replace(geometry, probe=True, max_scale=8)
    detail = (int(geometry.size[0] * 0.35), int(geometry.size[1] * 0.35))  # texture about 3 model pixels wide
    for scale in SCALES:
        exact, drafted = [], []
        figures = decision.scales[scale]
        for k, size in enumerate(calibration_sizes(geometry, scale)):
            jpeg = calibration_jpeg(size, detail, 100 * scale + k)
            decoded = decode_bytes(jpeg, 0.0, probing, _CALIBRATION_LIMITS, 0)
            assert decoded.pixels is not None and decoded.probe is not None and decoded.probe[0] == scale
            exact.append(decoded.pixels)
            drafted.append(decoded.probe[1])
            figures.full_s += _decode_seconds(jpeg, dataclasses.replace(geometry, max_scale=1))
            figures.draft_s += _decode_seconds(jpeg, dataclasses.replace(geometry, max_scale=scale))
        decision.scales[scale].add(predict(np.stack(exact)), predict(np.stack(drafted)))
        decision.calibration_images += len(exact)
    return decision


def _decode_seconds(jpeg: bytes, geometry: ItemGeometry) -> float:
    started = time.perf_counter()
    decode_bytes(jpeg, 0.0, geometry, _CALIBRATION_LIMITS, 0)
    return time.perf_counter() - started


class DecodeCheck:
    """One model's decode mode: plans how each file is decoded and learns from the first creatives."""

    def __init__(self, geometry: ItemGeometry, mode: str, decision: DecodeDecision | None = None,
                 store: Path | None = None, predict: Predict | None = None) -> None:
        """`predict`: the model's exact probabilities (fp32), for drafted creatives that `observe` is given."""
        self.mode = mode
        self.decision = decision
        self._geometry = geometry
        self._store = store
        self._predict = predict
        self._current = self._decided()

    @property
    def drafts(self) -> bool:
        """Whether this model's JPEGs are (or, once the first creatives agree, will be) drafted."""
        if self.mode != "auto" or self.decision is None:
            return self.mode == "fast"
        return self.decision.max_scale > 1

    def _decided(self) -> ItemGeometry:
        if self.mode == "exact":
            return dataclasses.replace(self._geometry, max_scale=1)
        if self.mode == "fast" or self.decision is None:
            return dataclasses.replace(self._geometry, max_scale=8)
        if not self.decision.final:  # probation: score on full decodes, draft beside them to compare
            return dataclasses.replace(self._geometry, max_scale=1, probe=True)
        return dataclasses.replace(self._geometry, max_scale=self.decision.max_scale)

    def plan(self) -> ItemGeometry:
        """How the next file handed to a decoder is decoded."""
        return self._current

    def describe(self) -> str:
        """The mode in use and why, for the log and the report."""
        if self.decision is not None:
            return self.decision.describe()
        if self.mode == "exact":
            return "exact: full-size decoding (images.decode), no check"
        return "fast: JPEG draft decoding down to 1/8 (images.decode), not checked against full decoding"

    def observe(self, exact: np.ndarray, probes: Sequence[tuple[int, np.ndarray]]) -> bool:
        """Add creatives decoded both ways: probabilities from full decodes, (scale, drafted pixels).

        The drafted pixels are run through the exact predictor the check was opened with.
        Returns True when the mode or its figures changed.
        """
        if self.decision is None or self.decision.final or not probes:
            return False
        predict = self._predict
        if predict is None:
            raise ValueError("the decode check was opened without a predictor: open it with open_check()")
        before = self.describe()
        for scale in SCALES:
            rows = [i for i, (s, _) in enumerate(probes) if s == scale]
            if rows:
                drafted = predict(np.stack([probes[i][1] for i in rows]))
                self.decision.scales[scale].add(exact[rows], drafted)
        self.decision.creatives += len(probes)
        self._current = self._decided()
        if self.decision.final:
            log.info("decode check finished for model %s: %s", self.decision.sha256[:12], self.describe())
        self._save()
        return self.describe() != before

    def _save(self) -> None:
        if self._store is not None and self.decision is not None:
            keep_record(self._store, self.decision.to_json(), "decode check")


def open_check(geometry: ItemGeometry, mode: str, sha256: str, state: Path, predict: Predict) -> DecodeCheck:
    """The model's decode check: read from state/decode/, or measured now on the calibration images."""
    if mode != "auto":
        check = DecodeCheck(geometry, mode, predict=predict)
        log.info("decoding: %s", check.describe())
        return check
    store = state / "decode" / f"{sha256}.json"
    decision = read_record(store, sha256, "decode check", DecodeDecision.from_json)
    fresh, how = decision is None, f"kept in {store}"
    if decision is None:
        started = time.perf_counter()
        decision = calibrate(geometry, sha256, predict)
        how = f"measured in {time.perf_counter() - started:.1f} s"
    check = DecodeCheck(geometry, mode, decision, store, predict)
    if fresh:
        check._save()
    log.info("decoding (%s): %s", how, check.describe())
    return check


def read_record(store: Path, sha256: str, what: str, parse: Callable[[dict[str, Any]], R]) -> R | None:
    """A per-model check's record kept in state/, or None when it is missing, unreadable or another model's."""
    try:
        data = json.loads(store.read_text(encoding="utf-8"))
        return parse(data) if data["sha256"] == sha256 else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("%s %s is unreadable (%s): checking again", what, store, exc)
        return None


def keep_record(store: Path, data: dict[str, Any], what: str) -> None:
    """Keep a per-model check's record in state/, written whole or not at all."""
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(store, json.dumps(data, indent=2))
    except OSError as exc:  # the check is repeated next time; scoring goes on
        log.warning("cannot keep the %s in %s (%s): it will run again next time", what, store, exc)
