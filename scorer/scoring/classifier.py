"""The classifier: a verified learner, its low-to-high class order and a runtime to run it on."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from scorer.checks.calibration import calibration_pixels, extreme_pixels
from scorer.checks.precision import PrecisionCheck, load_or_measure_precision
from scorer.decoding.decode import ItemGeometry
from scorer.errors import ConfigError
from scorer.memory import trim_heap
from scorer.model.integrity import verify_model
from scorer.model.runtime import OnnxRuntime, Runtime, choose_device, describe_export_check
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
    """Turns model-sized pixels (or, on the fallback path, files) into class probabilities, low to high, and the
    embedding of the same forward pass: scorer.scoring.engine.Predictor, which every classifier is."""

    def __init__(self, settings: Settings, *, explain: bool = True) -> None:
        """`explain=False`: this run will draw no Grad-CAM overlay, so the PyTorch copy need not be kept."""
        trusted = verify_model(settings)
        self.sha256 = trusted.sha256
        started = time.perf_counter()
        self.batch_size = settings.batch_size
        self.threads = settings.threads or os.cpu_count() or 1
        device = choose_device(settings.device)
        opened = open_model(settings, trusted.data, self.sha256, device, self.threads,
                            explain and settings.report.explain != "never")
        del trusted  # the learner holds the weights now; the file's bytes need not stay in memory
        classes = order_classes(opened.vocab, settings.classes, opened.saved_classes)
        self.classes: tuple[str, ...] = tuple(classes)
        self._columns = np.array([opened.vocab.index(c) for c in classes])
        self._activation, self._batch_tfm = opened.activation, opened.prepare
        self.geometry: ItemGeometry | None = opened.geometry
        self.has_embedding = opened.has_embedding
        #: the runtime as opened, at full precision: what the checks trust
        self.runtime: Runtime = opened.runtime
        self._int8_file = opened.int8_file
        self._learn, self.torch_model = opened.learn, opened.torch_model
        #: the precision check, once check_precision made one: then creatives run through it (fp32 or int8)
        self.precision: PrecisionCheck | None = None
        self.export_check = describe_export_check(self.runtime, recorded=opened.from_fast_start)
        trim_heap()  # what loading and exporting freed, given back before the decoding workers start
        how = " from its fast start" if opened.from_fast_start else ""
        log.info("model %s loaded in %.1f s%s: classes %s, %s on %s, %s", settings.model,
                 time.perf_counter() - started, how, list(self.classes), self.runtime.name, self.runtime.device,
                 self.preprocessing)

    def check_precision(self, settings: Settings, drafts: Callable[[], bool]) -> PrecisionCheck | None:
        """Decide, or read back, whether int8 scores this model's creatives (scorer.checks.precision); from now on
        they run through the check it returns. None where no int8 copy can be made (not on ONNX Runtime).

        `drafts` tells whether the decode check drafts the model's JPEGs: only then may int8 be used.
        """
        if self._int8_file is None or not isinstance(self.runtime, OnnxRuntime):
            return None

        def calibration(count: int, seed: int, extremes: bool) -> np.ndarray:
            assert self.geometry is not None
            pixels = calibration_pixels(self.geometry, count, seed)
            if extremes:
                pixels = np.concatenate([pixels, extreme_pixels(self.geometry, seed)])
            return self.prepare(pixels)

        self.precision = load_or_measure_precision(settings.precision, self.sha256, settings.state, self.runtime,
                                                   self._probabilities, calibration=calibration,
                                                   int8_file=self._int8_file, drafts=drafts)
        return self.precision

    @property
    def preprocessing(self) -> str:
        """How creatives become the model's input, in words, for the log and the report's Model sheet."""
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

    def predict_with_embedding(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K), lowest class first, for uint8 pixels shaped (N, H, W, 3), and the embedding (N, D)
        from the same forward pass (None when the model gives none)."""
        batch = self.prepare(pixels)
        logits, embedding = self.precision.run(batch) if self.precision is not None else self.runtime.run(batch)
        return self._probabilities(logits), embedding

    def predict_fp32(self, pixels: np.ndarray) -> np.ndarray:
        """Probabilities as predict_with_embedding gives them, always at full precision: what the decode check
        compares."""
        return self._probabilities(self.runtime.run(self.prepare(pixels))[0])

    def predict_files(self, files: list[Path]) -> np.ndarray:
        """Probabilities (N, K), lowest class first, through fastai's own test_dl (the fallback path)."""
        from scorer.model.learner import predict_files  # opened through fastai already: no transforms known

        return predict_files(self._learn, files, self.batch_size)[:, self._columns]
