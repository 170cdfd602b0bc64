"""The precision check: whether ONNX Runtime's int8 copy of one model gives its answers, decided once per model.

Static int8 quantisation (per-channel weights, activation ranges calibrated on photo-like images)
runs a CNN several times faster than fp32 on these CPUs, but, as with drafting, how far it moves
the probabilities depends on the model: a confident learner does not notice, a soft one changes
its answers. So with `precision: auto`, the first time a model (by SHA-256) runs on ONNX Runtime:

- a model whose fp32 forward pass costs under MIN_FP32_MS per image stays fp32: decoding costs
  more than it does, so int8 would save little;
- any other is quantised and compared with fp32 on check images other than those that set its
  activation ranges; then, while the first real creatives are scored in fp32, int8 runs beside them.

int8 scores creatives only while mean |Δp| stays within MEAN_DP_LIMIT (and every |Δp| within
MAX_DP_LIMIT), no top-1 answer flips, the embedding (the evidence index's coordinates)
keep a cosine of at least MIN_COSINE, int8 is at least MIN_SPEEDUP times as fast on this
machine, and the decode check lets this model's JPEGs be drafted: a model whose answers move
under drafting is kept exact. The finding and its figures are kept in
state/precision/<sha256>.json, and the int8 file beside the ONNX export, pinned in the state
folder like it. Once int8 is in use, one batch in about AUDIT_EVERY creatives is run in fp32 too
and added to the figures: creatives unlike the first ones can still send the model back to fp32,
for good.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scorer.checks.agreement import Agreement, keep_finding, read_finding, speed_text
from scorer.checks.quantize import quantize_int8
from scorer.errors import ModelError
from scorer.fsutil import atomic_write, sha256_bytes
from scorer.model.integrity import PinMismatch, read_pinned
from scorer.model.runtime import OnnxRuntime, Outputs, Runtime, ms_per_image

log = logging.getLogger(__name__)

MEAN_DP_LIMIT = 0.001  # largest mean |Δp| against fp32 that int8 may cause: half the decode check's
MAX_DP_LIMIT = 0.05  # and the largest |Δp| on any one image and class
MIN_COSINE = 0.999  # smallest cosine between a creative's int8 and fp32 embedding
MIN_SPEEDUP = 1.25  # int8 must be at least this many times as fast as fp32 on this machine
MIN_FP32_MS = 4.0  # fp32 forward passes cheaper than this per image are not worth quantising
PROBE_CREATIVES = 16  # real creatives compared before the finding is final
AUDIT_EVERY = 512  # once int8 is in use, one batch in about this many creatives is run in fp32 beside it
CALIBRATION_IMAGES = 16  # images that set the activation ranges ...
CHECK_IMAGES = 8  # ... and other images that int8 is first compared on

ToProbs = Callable[[np.ndarray], np.ndarray]
# (count, seed, extremes) → a prepared float32 NCHW batch of `count` photo-like images, and with `extremes`
# black, white, primaries and hard edges too: activation ranges set on those cover what creatives hold
Calibration = Callable[[int, int, bool], np.ndarray]


@dataclass
class PrecisionFinding:
    """What the check found for one model: int8 against fp32, and so which one scores its creatives."""

    sha256: str
    held: str = ""  # why int8 was not tried; empty when it was
    fp32_ms: float = 0.0  # per image on the check images, this machine, the configured threads
    int8_ms: float = 0.0
    agreement: Agreement = field(default_factory=Agreement)
    min_cosine: float = 1.0
    check_images: int = 0
    creatives: int = 0
    audited: int = 0  # creatives compared again after int8 was chosen

    @property
    def passes(self) -> bool:
        """Tried, and within every limit so far."""
        return (not self.held and self.agreement.within(MEAN_DP_LIMIT) and self.agreement.max_abs_dp <= MAX_DP_LIMIT
                and self.min_cosine >= MIN_COSINE
                and self.int8_ms > 0 and self.int8_ms * MIN_SPEEDUP <= self.fp32_ms)

    @property
    def final(self) -> bool:
        """Later runs use the finding as it stands: held, failed, or enough creatives agreed."""
        return bool(self.held) or not self.passes or self.creatives >= PROBE_CREATIVES

    @property
    def use_int8(self) -> bool:
        """int8 scores this model's creatives (while the decode check drafts its JPEGs)."""
        return self.final and self.passes

    def add(self, exact: Outputs, int8: Outputs, to_probs: ToProbs) -> None:
        """Count one batch's fp32 outputs against its int8 outputs."""
        self.agreement.add(to_probs(exact[0]), to_probs(int8[0]))
        if exact[1] is not None and int8[1] is not None:
            a, b = exact[1].astype(np.float64), int8[1].astype(np.float64)
            norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            cosine = (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0)
            self.min_cosine = min(self.min_cosine, float(np.where(norms > 0, cosine, 1.0).min()))

    def describe(self) -> str:
        """The finding and its figures, for the log and the report's Model sheet."""
        if self.held:
            return f"auto: fp32, int8 not tried: {self.held}"
        if not self.final:
            chosen = (f"fp32 while the first creatives are checked ({self.creatives} of {PROBE_CREATIVES}), "
                      "then int8 if the figures hold")
        else:
            chosen = "int8" if self.passes else "fp32, int8 failed the check"
        speed = f"int8 {speed_text(self.fp32_ms, self.int8_ms)}" if self.int8_ms else "int8 not timed"
        seen = f"{self.check_images} check images, {self.creatives} creatives" + (
            f", {self.audited} audited since" if self.audited else "")
        return (f"auto: {chosen}. int8 vs fp32: {self.agreement.figures()} ({seen}), embedding' cosine ≥ "
                f"{self.min_cosine:.4f}, {speed} ({self.int8_ms:.1f} vs {self.fp32_ms:.1f} ms per image). "
                f"int8 needs mean |Δp| ≤ {MEAN_DP_LIMIT}, "
                f"max ≤ {MAX_DP_LIMIT}, no flips, cosine ≥ {MIN_COSINE} and {MIN_SPEEDUP}× the speed")

    def to_json(self) -> dict[str, Any]:
        """The finding as JSON-ready data."""
        return {**dataclasses.asdict(self), "use_int8": self.use_int8}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PrecisionFinding:
        """Read back what to_json wrote."""
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["agreement"] = Agreement(**data["agreement"])
        return cls(**values)


@dataclass(frozen=True)
class Int8File:
    """Where a model's int8 copy lives, beside its ONNX export, and how both are pinned."""

    source: Path  # the fp32 ONNX export ...
    source_sha256: str  # ... and the SHA-256 it was verified against at load
    threads: int
    pinned: Callable[[], str | None]
    remember: Callable[[str], None]

    @property
    def path(self) -> Path:
        """The int8 file's path."""
        return self.source.with_name(f"{self.source.stem}.int8.onnx")

    def load(self) -> OnnxRuntime | None:
        """The kept int8 copy, or None when it is missing or not the file that was pinned."""
        pin = self.pinned()
        if pin is None or not self.path.is_file():
            return None
        try:
            data = read_pinned(self.path, pin, f"int8 copy {self.path}", "checking the model again")
        except PinMismatch as exc:
            log.warning("%s", exc)
            return None
        return OnnxRuntime(data, self.threads, "int8")

    def make(self, calibration: np.ndarray, fp32: Runtime) -> OnnxRuntime:
        """Quantise the export (the bytes that were verified) with these activation ranges, pin and open it.

        The fp32 session is closed meanwhile: the quantiser needs the memory more than an idle session does.
        """
        data = read_pinned(self.source, self.source_sha256, f"ONNX export {self.source}",
                           "delete it, and it is exported again")
        with tempfile.TemporaryDirectory(prefix="scorer-int8-") as tmp:
            export = Path(tmp, "export.onnx")  # a private copy of the verified bytes, which reopen fp32 too
            export.write_bytes(data)
            del data
            if isinstance(fp32, OnnxRuntime):
                fp32.close()
            try:
                made = quantize_int8(Path(tmp), calibration)
            finally:
                if isinstance(fp32, OnnxRuntime):
                    fp32.open(export.read_bytes())
        atomic_write(self.path, made)
        self.remember(sha256_bytes(made))
        return OnnxRuntime(made, self.threads, "int8")


class PrecisionCheck:
    """One model's precision: which runtime scores its creatives, and what the first creatives show."""

    def __init__(self, mode: str, fp32: Runtime, to_probs: ToProbs, *, int8: Runtime | None = None,
                 finding: PrecisionFinding | None = None, store: Path | None = None,
                 drafts: Callable[[], bool] = lambda: True, note: str = "") -> None:
        """`drafts`: whether the decode check drafts this model's JPEGs now; `note`: why there is no finding."""
        self.mode = mode
        self.finding = finding
        self._fp32, self._int8, self._to_probs = fp32, int8, to_probs
        self._store, self._drafts, self._note = store, drafts, note
        self._unaudited = 0  # creatives scored in int8 since the last audit

    def _int8_now(self) -> bool:
        return self._int8 is not None and self.finding is not None and self.finding.use_int8 and self._drafts()

    @property
    def runtime(self) -> Runtime:
        """The runtime that scores creatives now."""
        return self._int8 if self._int8 is not None and self._int8_now() else self._fp32

    def run(self, batch: np.ndarray) -> Outputs:
        """Outputs for a batch of creatives; while int8 is on probation, fp32's, with int8 compared beside them.

        Once int8 is in use, an occasional batch is audited: run in fp32 too, and counted in the figures.
        """
        if self._int8_now():
            assert self._int8 is not None and self.finding is not None
            outputs = self._int8.run(batch)
            self._unaudited += len(batch)
            if self._unaudited < AUDIT_EVERY:
                return outputs
            self._unaudited = 0
            exact = self._fp32.run(batch)
            self.finding.add(exact, outputs, self._to_probs)
            self.finding.audited += len(batch)
            self._save()
            if self.finding.use_int8:
                return outputs
            log.warning("precision audit for model %s: int8 no longer gives the model's answers, back to fp32: %s",
                        self.finding.sha256[:12], self.describe())
            return exact
        outputs = self._fp32.run(batch)
        finding = self.finding
        if finding is not None and self._int8 is not None and not finding.final and self._drafts():
            finding.add(outputs, self._int8.run(batch), self._to_probs)
            finding.creatives += len(batch)
            if finding.final:
                log.info("precision check finished for model %s: %s", finding.sha256[:12], self.describe())
            self._save()
        return outputs

    def describe(self) -> str:
        """The precision in use and why, for the log and the report."""
        if self.mode == "fp32":
            return "fp32 (precision: fp32), int8 not tried"
        if self.finding is None:
            return f"auto: fp32, int8 not tried: {self._note}"
        if self.finding.passes and not self._drafts():
            return ("auto: fp32, as the decode check keeps this model's JPEGs at full size, its answers are kept "
                    f"exact too. {self.finding.describe()}")
        return self.finding.describe()

    def _save(self) -> None:
        if self._store is not None and self.finding is not None:
            keep_finding(self._store, self.finding.to_json(), "precision check")


def load_or_measure_precision(mode: str, sha256: str, state: Path, fp32: Runtime, to_probs: ToProbs, *,
                   calibration: Calibration, int8_file: Int8File, drafts: Callable[[], bool]) -> PrecisionCheck:
    """The model's precision check: read from state/precision/, or measured now."""
    if mode != "auto":
        return PrecisionCheck(mode, fp32, to_probs)
    if not drafts():
        return PrecisionCheck(mode, fp32, to_probs, drafts=drafts, note=(
            "this model's JPEGs are decoded at full size (images.decode, or the decode check), so its answers are "
            "kept exact"))
    store = state / "precision" / f"{sha256}.json"
    finding = read_finding(store, sha256, "precision check", PrecisionFinding.from_json)
    int8: Runtime | None = None
    how = f"kept in {store}"
    if finding is not None and finding.passes:
        int8 = int8_file.load()
        if int8 is None:
            finding = None
    fresh = finding is None
    if finding is None:
        started = time.perf_counter()
        finding, int8 = _measure(sha256, fp32, to_probs, calibration, int8_file)
        how = f"measured in {time.perf_counter() - started:.1f} s"
    check = PrecisionCheck(mode, fp32, to_probs, int8=int8, finding=finding, store=store, drafts=drafts)
    if fresh:
        check._save()
    log.info("precision (%s): %s", how, check.describe())
    return check


def _measure(sha256: str, fp32: Runtime, to_probs: ToProbs, calibration: Calibration, int8_file: Int8File
             ) -> tuple[PrecisionFinding, Runtime | None]:
    finding = PrecisionFinding(sha256)
    checking = calibration(CHECK_IMAGES, 7000, False)
    finding.fp32_ms = ms_per_image(fp32, checking)
    if finding.fp32_ms < MIN_FP32_MS:
        finding.held = (f"its fp32 forward pass takes {finding.fp32_ms:.1f} ms per image here, too little for int8 "
                         f"to matter (tried from {MIN_FP32_MS:g} ms)")
        return finding, None
    try:
        int8 = int8_file.make(calibration(CALIBRATION_IMAGES, 6000, True), fp32)
        finding.int8_ms = ms_per_image(int8, checking)
        finding.add(fp32.run(checking), int8.run(checking), to_probs)
    except ModelError:
        raise
    except Exception as exc:  # the quantiser does not cover every layer a user's model may have
        log.warning("int8 quantisation failed (%s: %s): scoring in fp32", type(exc).__name__, exc)
        finding.held = f"int8 quantisation failed ({type(exc).__name__})"
        return finding, None
    finding.check_images = len(checking)
    return finding, int8
