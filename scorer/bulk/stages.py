"""The two Ray Data stages of `scorer bulk`: vet and decode as CPU tasks, infer in an actor pool.

Both call the floors as `scorer score` does: read_regular_file and decode_bytes for vetting and
decoding, the Classifier (verified learner, batch transforms, ONNX or PyTorch runtime) for
probabilities, and scoring.frames to weigh a video's frames into its one answer. Ray passes batches
between them as dicts of numpy columns; `pixels` holds each input's frames: a still's one, a video's
sampled ones, none for a row that is not scored.

A video is known by its content and decoded in a decoding worker process of the task's own (the
decode pool of `scorer score`, one worker), within video.max_memory_mb and video.timeout: FFmpeg is C,
and a video that crashes, hangs or floods it costs its own row, with `scorer score`'s reason, never
the task (whose worker Ray would start again and again). Stills decode in the task itself.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from scorer.bulk.shipping import ShippedModel, unpack_model
from scorer.bulk.source import read_input
from scorer.decoding import reasons
from scorer.decoding.decode import Decoded, ItemGeometry, decode_bytes
from scorer.decoding.pool import DecodeJob, DecodePool, VideoDecodeFn
from scorer.decoding.vet import ImageLimits
from scorer.decoding.video import DecodedVideo, decode_video
from scorer.decoding.video_probe import VideoLimits, video_format
from scorer.errors import ImageError, ScorerError
from scorer.fsutil import sha256_bytes
from scorer.model.fast_start import FastStart
from scorer.scoring.frames import predict_frames
from scorer.settings import Settings

log = logging.getLogger(__name__)

Batch = dict[str, Any]
DecodeBytes = Callable[[bytes, float, "ItemGeometry | None", ImageLimits, int], Decoded]

SCORED, REJECTED, DUPLICATE, KNOWN, REFUSED = "scored", "rejected", "duplicate", "known", "refused"
IMAGE, VIDEO = "image", "video"  # the `media` column


@dataclass(frozen=True)
class DecodeStage:
    """What every decoding task needs: the learner's geometry, the limits and the content DEST already holds."""

    geometry: ItemGeometry
    limits: ImageLimits
    video: VideoLimits = VideoLimits()
    timeout: float = 60.0  # images.decode_timeout: a decoding worker's time to tell it holds a video
    known: frozenset[str] = frozenset()
    decode: DecodeBytes = field(default=decode_bytes)
    decode_video: VideoDecodeFn = field(default=decode_video)

    def __call__(self, batch: Batch) -> Batch:
        """Vet and decode a batch of inputs; each one comes out scored-to-be, rejected or known."""
        paths = [str(p) for p in batch["path"]]
        out = _columns(paths, self.geometry.size)
        with _Worker(self) as worker:
            for i, path in enumerate(paths):
                self._take(out, i, path, worker)
        return out

    def _take(self, out: Batch, i: int, path: str, worker: _Worker) -> None:
        try:
            data, modified = read_input(path, self.limits, self.video)
            sha = out["sha256"][i] = sha256_bytes(data)
            if sha in self.known:  # --resume: DEST already holds a result for this content
                out["status"][i] = KNOWN
                return
            if video_format(data[:64]) is None:
                decoded = self.decode(data, modified, self.geometry, self.limits, 0)
            else:
                copy = worker.copy(data, path)
                del data  # the worker reads the copy: the task does not hold a second one meanwhile
                decoded = worker.decode(copy)
        except ImageError as exc:
            out["status"][i], out["reason"][i] = REJECTED, str(exc)
            return
        except MemoryError:
            out["status"][i], out["reason"][i] = REJECTED, reasons.out_of_memory()
            return
        except Exception as exc:  # a decoder bug must cost one file, not the job
            log.exception("decoding %s failed", path)
            out["status"][i], out["reason"][i] = REJECTED, reasons.undecodable(exc)
            return
        _put_decoded(out, i, decoded, modified)


def _columns(paths: list[str], size: tuple[int, int]) -> Batch:
    """A decoding task's output for `paths`, each row as yet without a result."""
    n, (w, h) = len(paths), size

    def each(make: Any) -> np.ndarray:
        column = np.empty(n, dtype=object)
        column[:] = [make() for _ in range(n)]
        return column

    return {"path": np.array(paths, dtype=object), "sha256": np.full(n, "", dtype=object),
            "status": np.full(n, SCORED, dtype=object), "reason": np.full(n, "", dtype=object),
            "width": np.zeros(n, np.int32), "height": np.zeros(n, np.int32),
            "format": np.full(n, "", dtype=object), "file_bytes": np.zeros(n, np.int64),
            "modified": np.zeros(n, np.float64), "notes": np.full(n, "", dtype=object),
            "media": np.full(n, "", dtype=object), "duration": np.zeros(n, np.float64),
            "frames": np.zeros(n, np.int32), "pixels": each(lambda: np.zeros((0, h, w, 3), np.uint8)),
            "times": each(lambda: np.zeros(0, np.float64)), "in_hook": each(lambda: np.zeros(0, bool))}


def _put_decoded(out: Batch, i: int, decoded: Decoded, modified: float) -> None:
    assert decoded.pixels is not None
    out["width"][i], out["height"][i], out["format"][i] = decoded.width, decoded.height, decoded.format
    out["file_bytes"][i], out["notes"][i] = decoded.file_bytes, "; ".join(decoded.notes)
    out["modified"][i] = modified  # the input's own, not that of the copy a decoding worker read
    if isinstance(decoded, DecodedVideo):
        out["media"][i], out["duration"][i], out["frames"][i] = VIDEO, decoded.duration, len(decoded.times)
        out["pixels"][i], out["times"][i] = decoded.pixels, np.array(decoded.times, np.float64)
        out["in_hook"][i] = np.array(decoded.in_hook, bool)
    else:
        out["media"][i], out["pixels"][i] = IMAGE, decoded.pixels[None]


class _Worker:
    """A task's decoding worker process (scorer.decoding.pool), started for its first video, stopped with the task.

    It is handed a copy of the bytes the task read, in a private folder, under the input's own name (for the log).
    """

    def __init__(self, stage: DecodeStage) -> None:
        self._stage = stage
        self._pool: DecodePool | None = None
        self._folder: Path | None = None

    def copy(self, data: bytes, source: str) -> Path:
        """The input's bytes as a file the worker can read."""
        if self._folder is None:
            self._folder = Path(tempfile.mkdtemp(prefix="scorer-bulk-decode-"))
        copy = self._folder / (Path(source).name.lstrip(".") or "input")
        copy.write_bytes(data)
        return copy

    def decode(self, copy: Path) -> Decoded:
        """The copy decoded in the worker, then deleted; ImageError with `scorer score`'s reason when it fails."""
        stage = self._stage
        if self._pool is None:
            job = DecodeJob(stage.geometry, stage.limits, 0, video=stage.video, decode_video=stage.decode_video)
            self._pool = DecodePool(job, workers=1, timeout=stage.timeout)
        try:
            ((_, reply),) = self._pool.imap([copy])
        finally:
            copy.unlink(missing_ok=True)
        if isinstance(reply, ImageError):
            raise reply
        return reply

    def __enter__(self) -> _Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


class InferStage:
    """One inference actor: a Classifier of the shipped model, checked against the driver's pin; lives for the job."""

    def __init__(self, settings: Settings, shipped: Any, verified: str, fast_start: FastStart | None = None) -> None:
        import ray

        from scorer.scoring.classifier import Classifier

        if not isinstance(shipped, ShippedModel):  # a reference into Ray's object store
            shipped = ray.get(shipped)
        self._refusal, self._k = "", 1
        self._batch_size, self._hook_weight = settings.batch_size, settings.video.hook_weight
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
        frames, times, in_hook = batch.pop("pixels"), batch.pop("times"), batch.pop("in_hook")
        probs = np.full((len(status), self._k), np.nan)
        todo = np.flatnonzero(status == SCORED)
        if self._refusal:  # every row carries why this actor would not open the model
            batch["status"] = np.full(len(status), REFUSED, dtype=object)
            batch["reason"] = np.full(len(status), self._refusal, dtype=object)
        elif len(todo):
            decoded = [_decoded(batch, int(i), np.asarray(frames[i]), times[i], in_hook[i]) for i in todo]
            probs[todo] = predict_frames(self._classifier, decoded, self._hook_weight, self._batch_size).probs
        batch["probs"] = probs
        return batch



def _decoded(batch: Batch, i: int, frames: np.ndarray, times: Any, in_hook: Any) -> Decoded:
    """Row i as the decoding floor gave it, for scoring.frames: a still's one frame, or a video's sampled ones."""
    facts = (str(batch["sha256"][i]), int(batch["width"][i]), int(batch["height"][i]), str(batch["format"][i]),
             int(batch["file_bytes"][i]), float(batch["modified"][i]))
    if batch["media"][i] != VIDEO:
        return Decoded(*facts, pixels=frames[0])
    return DecodedVideo(*facts, pixels=frames, times=tuple(float(t) for t in times),
                        in_hook=tuple(bool(h) for h in in_hook), duration=float(batch["duration"][i]))
