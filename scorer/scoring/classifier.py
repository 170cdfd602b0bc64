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
from scorer.checks.precision import PrecisionCheck, load_or_measure_precision
from scorer.decoding.decode import ItemGeometry
from scorer.errors import ConfigError
from scorer.memory import trim_heap
from scorer.model.integrity import verify_model
from scorer.model.runtime import OnnxRuntime, Outputs, Runtime, choose_device, describe_export_check
from scorer.results import ModelInfo
from scorer.scoring.loading import open_model
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
        self.batch_size = settings.batch_size
        self.threads = settings.threads or os.cpu_count() or 1
        device = choose_device(settings.device)
        opened = open_model(settings, trusted.data, sha, device, self.threads,
                            explain and settings.report.explain != "never")
        del trusted  # the learner holds the weights now; the file's bytes need not stay in memory
        classes = order_classes(opened.vocab, settings.classes, opened.saved_classes)
        self.classes: tuple[str, ...] = tuple(classes)
        self._columns = np.array([opened.vocab.index(c) for c in classes])
        self._activation, self._batch_tfm = opened.activation, opened.prepare
        self.geometry: ItemGeometry | None = opened.geometry
        self.has_embedding = opened.has_embedding
        self._runtime, self._int8_file = opened.runtime, opened.int8_file  # full precision: what checks trust
        self._learn, self.torch_model = opened.learn, opened.torch_model
        self._precision: PrecisionCheck | None = None
        self.info = ModelInfo(
            path=settings.model,
            sha256=sha,
            classes=self.classes,
            device=self._runtime.device,
            runtime=self._runtime.name,
            preprocessing=self._describe_preprocessing(),
            versions={name: _version(name) for name in ("fastai", "torch", "onnxruntime")},
            card=read_card(settings.model),
            export_check=describe_export_check(self._runtime, recorded=opened.from_fast_start),
            precision=_precision_of(self._runtime, settings.half),
        )
        trim_heap()  # what loading and exporting freed, given back before the decoding workers start
        how = " from its fast start" if opened.from_fast_start else ""
        log.info("model %s loaded in %.1f s%s: classes %s, %s on %s, %s", settings.model,
                 time.perf_counter() - started, how, list(self.classes), self.info.runtime, self.info.device,
                 self.info.preprocessing)

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
        return self.predict_with_embedding(pixels)[0]

    def predict_with_embedding(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities as predict_pixels, and the embedding (N, D) from the same forward pass, if any."""
        logits, embedding = self._run(self.prepare(pixels))
        return self._probabilities(logits), embedding

    def _run(self, batch: np.ndarray) -> Outputs:
        return self._precision.run(batch) if self._precision is not None else self._runtime.run(batch)

    def predict_fp32(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities as predict_pixels, always at full precision: what the decode check compares."""
        return self._probabilities(self._runtime.run(self.prepare(pixels))[0])

    def predict_files(self, files: list[Path]) -> np.ndarray:
        """Probabilities (N, K), lowest class first, through fastai's own test_dl (the fallback path)."""
        from scorer.model.learner import predict_files  # opened through fastai already: no transforms known

        return predict_files(self._learn, files, self.batch_size)[:, self._columns]


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
