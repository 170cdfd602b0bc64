"""The classifier: a verified learner, its low-to-high class order and a runtime to run it on."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from scorer.errors import ConfigError, ModelError
from scorer.results import ModelInfo
from scorer.scoring import learner as fastai_learner
from scorer.scoring.decode import ItemGeometry
from scorer.scoring.integrity import verify_model
from scorer.scoring.runtime import (
    Runtime,
    TorchRuntime,
    choose_device,
    describe_export_check,
    load_or_export_onnx,
    onnx_cache_path,
    set_threads,
)
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

    def __init__(self, settings: Settings) -> None:
        sha = verify_model(settings)
        started = time.perf_counter()
        self._learn = fastai_learner.load(settings.model)
        vocab = fastai_learner.vocab_of(self._learn)
        classes = order_classes(vocab, settings.classes, fastai_learner.saved_classes(self._learn))
        self.classes: tuple[str, ...] = tuple(classes)
        self._columns = np.array([vocab.index(c) for c in classes])
        self._activation = fastai_learner.activation(self._learn)
        self._batch_tfm = fastai_learner.batch_transform(self._learn)
        self.geometry: ItemGeometry | None = fastai_learner.item_spec(self._learn)
        self.batch_size = settings.batch_size
        threads = settings.threads or os.cpu_count() or 1
        set_threads(threads)
        device = choose_device(settings.device)
        self._runtime = self._make_runtime(settings, device, sha, threads)
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
        )
        log.info("model %s loaded in %.1f s: classes %s, %s on %s, %s", settings.model,
                 time.perf_counter() - started, list(self.classes), self.info.runtime, self.info.device,
                 self.info.preprocessing)

    def _make_runtime(self, settings: Settings, device: str, sha: str, threads: int) -> Runtime:
        runtime = settings.runtime
        if runtime == "onnx" and device == "cuda":
            raise ConfigError("'runtime: onnx' runs on the CPU: set 'device: cpu', or 'runtime: auto' to use CUDA")
        if device == "cuda" or runtime == "torch" or self.geometry is None:
            return TorchRuntime(self._learn.model, device, settings.half)
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            if runtime == "onnx":
                raise ConfigError(
                    "'runtime: onnx' needs onnxruntime: pip install onnxruntime, or set 'runtime: auto'"
                ) from None
            return TorchRuntime(self._learn.model, device)
        folder = settings.model.parent if os.access(settings.model.parent, os.W_OK) else settings.state / "onnx"
        sample = self._prepare(self._sample_pixels())
        try:
            onnx = load_or_export_onnx(self._learn.model, sample, sha, onnx_cache_path(settings.model, sha, folder),
                                       threads)
        except ModelError:
            raise
        except Exception as exc:  # the exporter does not cover every layer a user's model may have
            if runtime == "onnx":
                raise ModelError(f"this model cannot be exported to ONNX ({type(exc).__name__}: {exc}): "
                                 "set 'runtime: torch' in config.yaml") from None
            log.warning("ONNX export failed (%s: %s): scoring with PyTorch instead", type(exc).__name__, exc)
            return TorchRuntime(self._learn.model, device)
        # Only cheap batch transforms stay in PyTorch now; its idle OpenMP threads would spin on
        # the cores that ONNX Runtime and the decoders need.
        set_threads(1)
        self._learn.model = None  # ONNX Runtime holds its own copy of the weights
        return onnx

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

    def _prepare(self, pixels: np.ndarray) -> np.ndarray:
        return self._batch_tfm(pixels)

    def _probabilities(self, logits: np.ndarray) -> np.ndarray:
        return self._activation(logits)[:, self._columns].astype(np.float64)

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities (N, K), lowest class first, for uint8 pixels shaped (N, H, W, 3)."""
        return self._probabilities(self._runtime.logits(self._prepare(pixels)))

    def predict_files(self, files: list[Path]) -> np.ndarray:
        """Probabilities (N, K), lowest class first, through fastai's own test_dl (the fallback path)."""
        return fastai_learner.predict_files(self._learn, files, self.batch_size)[:, self._columns]


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
