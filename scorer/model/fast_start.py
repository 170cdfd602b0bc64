"""The fast start: what scoring needs from a learner besides its ONNX export, kept in the state folder.

Opening a learner means importing fastai and PyTorch (about four seconds of CPU before anything is
scored) and unpickling it. Once a learner has been opened that way and its ONNX export checked, this
fast start holds the rest: its classes, how it resizes and normalises, and PyTorch's logits on the fixed
sample the export was checked against. A later start opens the pinned export with it and never imports
fastai or PyTorch (scoring/loading.py).

It is written only for learners whose validation batch transforms are fastai's IntToFloatTensor then
Normalize (or no Normalize) and whose activation is a softmax, which numpy computes here on every path,
so a learner scores alike whichever way it was opened. Like the checks' findings it is keyed by the
learner's SHA-256; it names the export's pin, and a fast start that does not read back whole is ignored.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scorer.decoding.decode import ItemGeometry
from scorer.fsutil import atomic_write

log = logging.getLogger(__name__)

_VERSION = 2  # 2: "embedding" (was "features")


@dataclass(frozen=True)
class Preprocessing:
    """fastai's IntToFloatTensor (x / div) then, when `mean` is set, Normalize ((x - mean) / std per channel)."""

    div: float
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 pixels (N, H, W, 3) to float32 NCHW, computed in float32 as fastai computes it."""
        x = pixels.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(self.div)
        if self.mean is not None and self.std is not None:
            x = (x - _channels(self.mean)) / _channels(self.std)
        return np.ascontiguousarray(x)


def _channels(values: tuple[float, ...]) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(1, -1, 1, 1)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the classes (axis 1) from raw outputs, in float32."""
    x = np.asarray(logits, dtype=np.float32)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


@dataclass(frozen=True)
class FastStart:
    """A learner as scoring runs it from its ONNX export (see the module's docstring)."""

    vocab: tuple[str, ...]
    saved_classes: tuple[str, ...] | None
    geometry: ItemGeometry
    preprocessing: Preprocessing
    embedding: bool  # the export returns embedding as a second output
    onnx_sha256: str  # the export this fast start was made with; it must also be the one pinned in the state folder
    sample_logits: tuple[tuple[float, ...], ...]  # PyTorch's logits on the fixed sample (scoring/loading.py)
    export_diff: float  # max |logit diff| of the export against them, measured when the fast start was made


def fast_start_path(state: Path, model_sha256: str) -> Path:
    """Where a learner's fast start lives."""
    return state / "fast-start" / f"{model_sha256}.json"


def keep_fast_start(state: Path, model_sha256: str, fast_start: FastStart) -> None:
    """Write the fast start atomically; a state folder that cannot take it only means the next start is slower."""
    path = fast_start_path(state, model_sha256)
    data = {"version": _VERSION, **asdict(fast_start)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(data, indent=1))
    except OSError as exc:
        log.warning("could not keep the fast start %s (%s): the next start opens the learner again", path, exc)


def read_fast_start(state: Path, model_sha256: str) -> FastStart | None:
    """The learner's fast start, or None when there is none or it does not read back whole."""
    path = fast_start_path(state, model_sha256)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.pop("version") != _VERSION:
            return None
        return _parse(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("fast start %s is damaged (%s): opening the learner itself", path, exc)
        return None


def _parse(data: dict[str, Any]) -> FastStart:
    g, p = data["geometry"], data["preprocessing"]
    geometry = ItemGeometry(str(g["method"]), _pair(g["size"]), str(g["pad_mode"]),
                            None if g["squish_to"] is None else _pair(g["squish_to"]))
    mean, std = p["mean"], p["std"]
    preprocessing = Preprocessing(float(p["div"]), None if mean is None else tuple(float(v) for v in mean),
                                  None if std is None else tuple(float(v) for v in std))
    vocab = tuple(str(v) for v in data["vocab"])
    saved = data["saved_classes"]
    logits = tuple(tuple(float(v) for v in row) for row in data["sample_logits"])
    if len(vocab) < 2 or any(len(row) != len(vocab) for row in logits) or not logits:
        raise ValueError("its classes and its sample logits do not agree")
    return FastStart(vocab, None if saved is None else tuple(str(v) for v in saved), geometry, preprocessing,
                         bool(data["embedding"]), str(data["onnx_sha256"]), logits, float(data["export_diff"]))


def _pair(values: Any) -> tuple[int, int]:
    first, second = values
    return int(first), int(second)
