"""The classifier: a verified learner, its low-to-high class order and a runtime to run it on."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from scorer.checks.calibration import calibration_pixels, extreme_pixels
from scorer.checks.precision import Int8File, PrecisionCheck, load_or_measure_precision
from scorer.decoding.decode import ItemGeometry
from scorer.errors import ConfigError, ModelError
from scorer.memory import trim_heap
from scorer.model import learner as fastai_learner
from scorer.model.integrity import derived_pin, remember_derived, verify_model
from scorer.model.runtime import (
    OnnxRuntime,
    Outputs,
    Runtime,
    TorchRuntime,
    choose_device,
    describe_export_check,
    load_or_export_onnx,
    onnx_cache_path,
    set_threads,
    with_features,
)
from scorer.results import ModelInfo
from scorer.settings import Settings

log = logging.getLogger(__name__)

# Names that place a class on the low-to-high scale when `classes` is not configured.
_TIERS = ((0, re.compile(r"low", re.I)), (1, re.compile(r"neutral|medium|mid", re.I)), (2, re.compile(r"high", re.I)))


def order_classes(vocab: list[str], configured: tuple[str, ...] | None, saved: list[str] | None) -> list[str]:
    """The learner's classes from lowest to highest engagement: configured, saved by training, or inferred."""
    if configured is not None:
        if sorted(configured) != sorted(vocab):
            raise ConfigError(
                f"'classes' in config.yaml lists {list(configured)} but the learner's classes are {sorted(vocab)}: "
                "list exactly the learner's classes, lowest engagement first"
            )
        return list(configured)
    if saved is not None and sorted(saved) == sorted(vocab):
        return saved
    tiers: dict[str, int] = {}
    for name in vocab:
        matches = [tier for tier, pattern in _TIERS if pattern.search(name)]
        if len(matches) == 1:
            tiers[name] = matches[0]
    if len(tiers) == len(vocab) and len(set(tiers.values())) == len(vocab):
        return sorted(vocab, key=tiers.__getitem__)
    raise ConfigError(
        f"cannot tell the low-to-high order of the learner's classes {sorted(vocab)}: "
        "set 'classes' in config.yaml, lowest engagement first"
    )


class Classifier:
    """Turns model-sized pixels (or, on the fallback path, files) into class probabilities, low to high."""

    def __init__(self, settings: Settings, *, explain: bool = True) -> None:
        """`explain=False`: this run will draw no Grad-CAM overlay, so the PyTorch copy need not be kept."""
        trusted = verify_model(settings)
        sha = trusted.sha256
        started = time.perf_counter()
        self._learn = fastai_learner.load(settings.model, trusted.data)
        del trusted  # the learner holds the weights now; the file's bytes need not stay in memory
        vocab = fastai_learner.vocab_of(self._learn)
        classes = order_classes(vocab, settings.classes, fastai_learner.saved_classes(self._learn))
        self.classes: tuple[str, ...] = tuple(classes)
        self._columns = np.array([vocab.index(c) for c in classes])
        self._activation = fastai_learner.activation(self._learn)
        self._batch_tfm = fastai_learner.batch_transform(self._learn)
        self.geometry: ItemGeometry | None = fastai_learner.item_spec(self._learn)
        self.batch_size = settings.batch_size
        self.threads = settings.threads or os.cpu_count() or 1
        set_threads(self.threads)
        device = choose_device(settings.device)
        self._net: Any = with_features(self._learn.model) or self._learn.model
        self.has_features = self._net is not self._learn.model and self.geometry is not None
        if not self.has_features:
            log.info("the model is not shaped as fastai's vision_learner builds it (body, then a pooling head): "
                     "scoring without evidence")
        # Grad-CAM needs the PyTorch model even when ONNX Runtime runs the forward pass: keep it only then.
        keep_torch = self.has_features and settings.report.explain != "never" and explain
        self._int8_file: Int8File | None = None
        self._runtime = self._make_runtime(settings, device, sha, keep_torch)  # full precision: what checks trust
        self._precision: PrecisionCheck | None = None
        self.torch_model: Any = self._learn.model
        self.info = ModelInfo(
            path=settings.model,
            sha256=sha,
            classes=self.classes,
            device=self._runtime.device,
            runtime=self._runtime.name,
            preprocessing=self._describe_preprocessing(),
            versions={name: _version(name) for name in ("fastai", "torch", "onnxruntime")},
            card=read_card(settings.model),
            export_check=describe_export_check(self._runtime),
            precision=_precision_of(self._runtime, settings.half),
        )
        trim_heap()  # what loading and exporting freed, given back before the decoding workers start
        log.info("model %s loaded in %.1f s: classes %s, %s on %s, %s", settings.model,
                 time.perf_counter() - started, list(self.classes), self.info.runtime, self.info.device,
                 self.info.preprocessing)

    def _make_runtime(self, settings: Settings, device: str, sha: str, keep_torch: bool) -> Runtime:
        runtime, threads = settings.runtime, self.threads
        if runtime == "onnx" and device == "cuda":
            raise ConfigError("'runtime: onnx' runs on the CPU: set 'device: cpu', or 'runtime: auto' to use CUDA")
        if device == "cuda" or runtime == "torch" or self.geometry is None:
            return TorchRuntime(self._net, device, settings.half)
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            if runtime == "onnx":
                raise ConfigError(
                    "'runtime: onnx' needs onnxruntime: pip install onnxruntime, or set 'runtime: auto'"
                ) from None
            return TorchRuntime(self._net, device)
        folder = settings.model.parent if os.access(settings.model.parent, os.W_OK) else settings.state / "onnx"
        sample = self.prepare(self._sample_pixels())
        cache = onnx_cache_path(settings.model, sha, folder, self.has_features)
        try:
            # the two-output export is another file than the one-output one: each has its own pin
            kind = "onnx-features" if self.has_features else "onnx"
            pinned = derived_pin(settings, kind, sha)
            onnx, onnx_sha = load_or_export_onnx(self._net, sample, cache, threads, pinned)
            if onnx_sha != pinned:
                remember_derived(settings, kind, sha, onnx_sha)
            self._int8_file = Int8File(cache, onnx_sha, threads, lambda: derived_pin(settings, f"{kind}-int8", sha),
                                       lambda made: remember_derived(settings, f"{kind}-int8", sha, made))
        except ModelError:
            raise
        except Exception as exc:  # the exporter does not cover every layer a user's model may have
            if runtime == "onnx":
                raise ModelError(f"this model cannot be exported to ONNX ({type(exc).__name__}: {exc}): "
                                 "set 'runtime: torch' in config.yaml") from None
            log.warning("ONNX export failed (%s: %s): scoring with PyTorch instead", type(exc).__name__, exc)
            return TorchRuntime(self._net, device)
        # Only cheap batch transforms stay in PyTorch now; its idle OpenMP threads would spin on
        # the cores that ONNX Runtime and the decoders need.
        set_threads(1)
        if not keep_torch:
            self._learn.model = self._net = None  # ONNX Runtime holds its own copy of the weights
        return onnx

    @property
    def info(self) -> ModelInfo:
        """What the report's Model sheet says, with the runtime and precision that score creatives now."""
        if self._precision is None:
            return self._info
        return dataclasses.replace(self._info, runtime=self._precision.runtime.name,
                                   precision=self._precision.describe())

    @info.setter
    def info(self, value: ModelInfo) -> None:
        self._info = value

    def load_or_measure_precision(self, settings: Settings, drafts: Callable[[], bool]) -> None:
        """Decide, or read back, whether int8 scores this model's creatives (scorer.checks.precision).

        `drafts` tells whether the decode check drafts the model's JPEGs: only then may int8 be used.
        """
        if self._int8_file is None or not isinstance(self._runtime, OnnxRuntime):
            return

        def calibration(count: int, seed: int, extremes: bool) -> np.ndarray:
            assert self.geometry is not None
            pixels = calibration_pixels(self.geometry, count, seed)
            if extremes:
                pixels = np.concatenate([pixels, extreme_pixels(self.geometry, seed)])
            return self.prepare(pixels)

        self._precision = load_or_measure_precision(settings.precision, self.info.sha256, settings.state, self._runtime,
                                         self._probabilities, calibration=calibration, int8_file=self._int8_file,
                                         drafts=drafts)

    def _sample_pixels(self) -> np.ndarray:
        assert self.geometry is not None
        w, h = self.geometry.size
        return np.random.default_rng(0).integers(0, 256, (2, h, w, 3), dtype=np.uint8)

    def _describe_preprocessing(self) -> str:
        if self.geometry is None:
            return "fastai test_dl (transforms not known to the fast engine)"
        g = self.geometry
        how = f"{g.method} to {g.size[0]}×{g.size[1]}"
        if g.method == "pad":
            how += f" ({g.pad_mode} padding)"
        return f"{how}; JPEG draft decoding (to ≥{g.draft_size[0]}×{g.draft_size[1]}) as the decode check allows"

    def prepare(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels (N, H, W, 3) to the model's float32 NCHW input, as scoring feeds it."""
        return self._batch_tfm(pixels)

    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        return self._activation(logits)[:, self._columns].astype(np.float64)

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities (N, K), lowest class first, for uint8 pixels shaped (N, H, W, 3)."""
        return self.predict_with_features(pixels)[0]

    def predict_with_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities as predict_pixels, and the pooled features (N, D) from the same forward pass, if any."""
        logits, features = self._run(self.prepare(pixels))
        return self._probabilities(logits), features

    def _run(self, batch: np.ndarray) -> Outputs:
        return self._precision.run(batch) if self._precision is not None else self._runtime.run(batch)

    def predict_fp32(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities as predict_pixels, always at full precision: what the decode check compares."""
        return self._probabilities(self._runtime.run(self.prepare(pixels))[0])

    def predict_files(self, files: list[Path]) -> np.ndarray:
        """Probabilities (N, K), lowest class first, through fastai's own test_dl (the fallback path)."""
        return fastai_learner.predict_files(self._learn, files, self.batch_size)[:, self._columns]


def _precision_of(runtime: Runtime, half: bool) -> str:
    if isinstance(runtime, OnnxRuntime):
        return "fp32"
    return "fp16 (half, on CUDA)" if half and runtime.device == "cuda" else "fp32 (PyTorch)"


def read_card(model: Path) -> dict[str, Any]:
    """The headline of the model card that `scorer train` writes beside the model, if there is one."""
    card = model.with_suffix(".card.json")
    if not card.is_file():
        return {}
    try:
        data = json.loads(card.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        log.warning("model card %s is not valid JSON: ignored", card)
        return {}
    return {"verdict": data.get("verdict", ""), **data.get("headline", {})}


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"
