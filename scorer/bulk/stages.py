"""The two Ray Data stages of `scorer bulk`: vet and decode as CPU tasks, infer in an actor pool.

Both call the floors as `scorer score` does: read_regular_file and decode_bytes for vetting and
decoding, the Classifier (verified learner, batch transforms, ONNX or PyTorch runtime) for
probabilities. Ray passes batches between them as dicts of numpy columns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from scorer.bulk.shipping import ShippedModel, unpack_model
from scorer.bulk.source import read_input
from scorer.decoding import reasons
from scorer.decoding.decode import Decoded, ItemGeometry, decode_bytes
from scorer.decoding.vet import ImageLimits
from scorer.errors import ImageError, ScorerError
from scorer.fsutil import sha256_bytes
from scorer.model.fast_start import FastStart
from scorer.settings import Settings

log = logging.getLogger(__name__)

Batch = dict[str, Any]
DecodeBytes = Callable[[bytes, float, "ItemGeometry | None", ImageLimits, int], Decoded]

SCORED, REJECTED, DUPLICATE, KNOWN, REFUSED = "scored", "rejected", "duplicate", "known", "refused"


@dataclass(frozen=True)
class DecodeStage:
    """What every decoding task needs: the learner's geometry, the limits and the content DEST already holds."""

    geometry: ItemGeometry
    limits: ImageLimits
    known: frozenset[str] = frozenset()
    decode: DecodeBytes = field(default=decode_bytes)

    def __call__(self, batch: Batch) -> Batch:
        """Vet and decode a batch of inputs; each one comes out scored-to-be, rejected or known."""
        paths = [str(p) for p in batch["path"]]
        n = len(paths)
        w, h = self.geometry.size
        out: Batch = {"path": np.array(paths, dtype=object), "sha256": np.full(n, "", dtype=object),
                      "status": np.full(n, SCORED, dtype=object), "reason": np.full(n, "", dtype=object),
                      "width": np.zeros(n, np.int32), "height": np.zeros(n, np.int32),
                      "format": np.full(n, "", dtype=object), "file_bytes": np.zeros(n, np.int64),
                      "modified": np.zeros(n, np.float64), "notes": np.full(n, "", dtype=object),
                      "pixels": np.zeros((n, h, w, 3), np.uint8)}
        for i, path in enumerate(paths):
            try:
                data, modified = read_input(path, self.limits)
                sha = sha256_bytes(data)
                out["sha256"][i] = sha
                if sha in self.known:  # --resume: DEST already holds a result for this content
                    out["status"][i] = KNOWN
                    continue
                decoded = self.decode(data, modified, self.geometry, self.limits, 0)
            except ImageError as exc:
                out["status"][i], out["reason"][i] = REJECTED, str(exc)
                continue
            except MemoryError:
                out["status"][i], out["reason"][i] = REJECTED, reasons.out_of_memory()
                continue
            except Exception as exc:  # a decoder bug must cost one file, not the job
                log.exception("decoding %s failed", path)
                out["status"][i], out["reason"][i] = REJECTED, reasons.undecodable(exc)
                continue
            _put_decoded(out, i, decoded)
        return out


def _put_decoded(out: Batch, i: int, decoded: Decoded) -> None:
    assert decoded.pixels is not None
    out["width"][i], out["height"][i], out["format"][i] = decoded.width, decoded.height, decoded.format
    out["file_bytes"][i], out["modified"][i] = decoded.file_bytes, decoded.modified
    out["notes"][i], out["pixels"][i] = "; ".join(decoded.notes), decoded.pixels


class InferStage:
    """One inference actor: a Classifier of the shipped model, checked against the driver's pin; lives for the job."""

    def __init__(self, settings: Settings, shipped: Any, verified: str, fast_start: FastStart | None = None) -> None:
        import ray

        from scorer.scoring.classifier import Classifier

        if not isinstance(shipped, ShippedModel):  # a reference into Ray's object store
            shipped = ray.get(shipped)
        self._refusal, self._k = "", 1
        try:
            # bulk draws no Grad-CAM: no PyTorch copy is kept, and with the driver's fast start the
            # checked export is opened without fastai (scorer.scoring.loading)
            self._classifier = Classifier(unpack_model(shipped, settings, verified, fast_start), explain=False)
        except ScorerError as exc:
            # Ray hands the driver only the text of a traceback when __init__ raises; as data, the refusal
            # reaches it whole, and it stops the job with this one line.
            self._refusal = str(exc)
            return
        self._k = len(self._classifier.classes)

    def __call__(self, batch: Batch) -> Batch:
        """Probabilities (lowest class first) for the batch's decoded rows; NaN for the rest."""
        status = np.asarray(batch["status"])
        pixels = batch.pop("pixels")
        probs = np.full((len(status), self._k), np.nan)
        todo = np.flatnonzero(status == SCORED)
        if self._refusal:  # every row carries why this actor would not open the model
            batch["status"] = np.full(len(status), REFUSED, dtype=object)
            batch["reason"] = np.full(len(status), self._refusal, dtype=object)
        elif len(todo):
            probs[todo] = self._classifier.predict_with_embedding(np.ascontiguousarray(pixels[todo]))[0]
        batch["probs"] = probs
        return batch
