"""Opening a verified learner for scoring, the fast way when it can and through fastai when it must.

- **From its fast start** (scorer.model.fast_start): when the learner has been opened here before, the
  run needs no PyTorch copy (no Grad-CAM overlay, no CUDA, not `runtime: torch`) and its pinned ONNX
  export is in place, the export is opened with the fast start. Neither fastai nor PyTorch is imported, so a
  start costs about a second of CPU instead of five. The export must still give the logits that PyTorch
  gave on the fixed sample when the fast start was made, as a full load checks it against PyTorch itself.
- **From the learner**: fastai unpickles it, checks that it runs, exports it to ONNX (or opens the kept
  export, checked against PyTorch) and, when numpy can prepare its batches, writes the fast start.

fastai and PyTorch are imported inside `_from_learner`, so opening from the fast start never loads them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scorer.checks.precision import Int8File
from scorer.decoding.decode import ItemGeometry
from scorer.errors import ConfigError, ModelError
from scorer.model.fast_start import FastStart, keep_fast_start, read_fast_start, softmax
from scorer.model.integrity import derived_pin, remember_derived
from scorer.model.runtime import OnnxRuntime, Runtime, onnx_cache_path, open_kept_onnx
from scorer.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Opened:
    """A learner ready to score: its classes, how its batches are prepared, and the runtime that runs it."""

    vocab: list[str]
    saved_classes: list[str] | None
    geometry: ItemGeometry | None  # None: transforms the fast engine does not know (files go through test_dl)
    prepare: Callable[[np.ndarray], np.ndarray]
    activation: Callable[[np.ndarray], np.ndarray]
    has_embedding: bool
    runtime: Runtime
    int8_file: Int8File | None = None
    torch_model: Any = None  # the PyTorch model, kept only for Grad-CAM
    learn: Any = None  # the fastai Learner, kept for the test_dl path
    from_fast_start: bool = False


def open_model(settings: Settings, data: bytes, sha: str, device: str, threads: int, explain: bool) -> Opened:
    """Open the learner whose verified bytes are `data` (SHA-256 `sha`); `explain`: Grad-CAM may be drawn."""
    if settings.precision == "fp16" and device != "cuda":
        raise ConfigError(f"'precision: fp16' is half precision on CUDA, and this run is on the CPU (device: "
                          f"{settings.device}): set 'precision: auto' (int8 where the precision check allows it, "
                          "else fp32) or 'precision: fp32'")
    if device == "cpu" and settings.runtime != "torch":
        fast_start = read_fast_start(settings.state, sha)
        if fast_start is not None and not (fast_start.embedding and explain):
            opened = _from_fast_start(settings, sha, fast_start, threads)
            if opened is not None:
                return opened
    return _from_learner(settings, data, sha, device, threads, explain)


def _onnx_folder(settings: Settings) -> Path:
    return settings.model.parent if os.access(settings.model.parent, os.W_OK) else settings.state / "onnx"


def _kind(embedding: bool) -> str:
    # the two-output export is another file than the one-output one: each has its own pin
    return "onnx-embedding" if embedding else "onnx"


def _int8_file(settings: Settings, cache: Path, onnx_sha: str, sha: str, threads: int, kind: str) -> Int8File:
    return Int8File(cache, onnx_sha, threads, lambda: derived_pin(settings, f"{kind}-int8", sha),
                    lambda made: remember_derived(settings, f"{kind}-int8", sha, made))


def sample_pixels(geometry: ItemGeometry) -> np.ndarray:
    """The fixed sample an export is checked on: two images of random pixels, always the same."""
    w, h = geometry.size
    return np.random.default_rng(0).integers(0, 256, (2, h, w, 3), dtype=np.uint8)


def _from_fast_start(settings: Settings, sha: str, fast_start: FastStart, threads: int) -> Opened | None:
    kind = _kind(fast_start.embedding)
    cache = onnx_cache_path(settings.model, sha, _onnx_folder(settings), fast_start.embedding)
    if derived_pin(settings, kind, sha) != fast_start.onnx_sha256 or not cache.is_file():
        return None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    plain = fast_start.preprocessing
    try:
        sample = plain.apply(sample_pixels(fast_start.geometry))
        runtime = open_kept_onnx(cache, fast_start.onnx_sha256, threads, sample,
                                 np.asarray(fast_start.sample_logits, dtype=np.float32),
                                 against="PyTorch's recorded answers", otherwise="opening the learner")
    except OSError:
        return None
    if runtime is None:
        return None
    return Opened(list(fast_start.vocab), None if fast_start.saved_classes is None else list(fast_start.saved_classes),
                  fast_start.geometry, plain.apply, softmax, fast_start.embedding, runtime,
                  _int8_file(settings, cache, fast_start.onnx_sha256, sha, threads, kind), from_fast_start=True)


def _from_learner(settings: Settings, data: bytes, sha: str, device: str, threads: int, explain: bool) -> Opened:
    from scorer.model import learner as fastai_learner
    from scorer.model.torch_runtime import set_threads, with_embedding

    learn = fastai_learner.load(settings.model, data)
    geometry = fastai_learner.item_spec(learn)
    sample = None if geometry is None else sample_pixels(geometry)
    plain = None if sample is None else fastai_learner.plain_preprocessing(learn, sample)
    softmaxed = fastai_learner.is_softmax(learn)
    set_threads(threads)
    net: Any = with_embedding(learn.model) or learn.model
    has_embedding = net is not learn.model and geometry is not None
    if not has_embedding:
        log.info("the model is not shaped as fastai's vision_learner builds it (body, then a pooling head): "
                 "scoring without evidence")
    prepare = plain.apply if plain else fastai_learner.batch_transform(learn)
    runtime, int8_file, expected = _runtime(settings, sha, device, threads, net, has_embedding, prepare(sample)
                                            if sample is not None else None)
    opened = Opened(fastai_learner.vocab_of(learn), fastai_learner.saved_classes(learn), geometry, prepare,
                    softmax if softmaxed else fastai_learner.activation(learn), has_embedding, runtime, int8_file,
                    torch_model=learn.model, learn=learn)
    if not isinstance(runtime, OnnxRuntime):
        return opened
    if int8_file is not None and expected is not None and plain is not None and softmaxed and geometry is not None:
        keep_fast_start(settings.state, sha, FastStart(
            tuple(opened.vocab), None if opened.saved_classes is None else tuple(opened.saved_classes), geometry,
            plain, has_embedding, int8_file.source_sha256, tuple(tuple(float(v) for v in row) for row in expected),
            float(runtime.export_diff or 0.0)))
    # Only cheap batch transforms stay in PyTorch now; its idle OpenMP threads would spin on
    # the cores that ONNX Runtime and the decoders need.
    set_threads(1)
    if not (has_embedding and settings.report.explain != "never" and explain):
        opened.torch_model = learn.model = None  # ONNX Runtime holds its own copy of the weights
    return opened


def _runtime(settings: Settings, sha: str, device: str, threads: int, net: Any, has_embedding: bool,
             sample: np.ndarray | None) -> tuple[Runtime, Int8File | None, np.ndarray | None]:
    """The runtime for the learner's model `net`; with ONNX Runtime, its int8 file and PyTorch's logits on the
    prepared `sample` (None: the fast engine does not know the learner's transforms)."""
    from scorer.model.torch_runtime import TorchRuntime, load_or_export_onnx

    runtime = settings.runtime
    if runtime == "onnx" and device == "cuda":
        raise ConfigError("'runtime: onnx' runs on the CPU: set 'device: cpu', or 'runtime: auto' to use CUDA")
    if device == "cuda" or runtime == "torch" or sample is None:
        return TorchRuntime(net, device, half=settings.precision == "fp16"), None, None
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if runtime == "onnx":
            raise ConfigError("'runtime: onnx' needs onnxruntime: pip install onnxruntime, or set 'runtime: auto'") \
                from None
        return TorchRuntime(net, device), None, None
    kind = _kind(has_embedding)
    cache = onnx_cache_path(settings.model, sha, _onnx_folder(settings), has_embedding)
    try:
        pinned = derived_pin(settings, kind, sha)
        onnx, onnx_sha, expected = load_or_export_onnx(net, sample, cache, threads, pinned)
        if onnx_sha != pinned:
            remember_derived(settings, kind, sha, onnx_sha)
    except ModelError:
        raise
    except Exception as exc:  # the exporter does not cover every layer a user's model may have
        if runtime == "onnx":
            raise ModelError(f"this model cannot be exported to ONNX ({type(exc).__name__}: {exc}): "
                             "set 'runtime: torch' in config.yaml") from None
        log.warning("ONNX export failed (%s: %s): scoring with PyTorch instead", type(exc).__name__, exc)
        return TorchRuntime(net, device), None, None
    return onnx, _int8_file(settings, cache, onnx_sha, sha, threads, kind), expected
