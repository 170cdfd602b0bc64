"""Score a batch of files: the one place where decoding, the model and the results meet."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from scorer.config import Settings
from scorer.errors import ImageError
from scorer.images import Decoded, ImageLimits, ItemGeometry, decode_file
from scorer.results import BatchResult, Duplicate, ModelInfo, Rejected, Scored
from scorer.workers import DecodeFn, DecodeJob, DecodePool


class Model(Protocol):
    """What the pipeline needs from a classifier (see scorer.model.Classifier)."""

    classes: tuple[str, ...]
    geometry: ItemGeometry | None
    batch_size: int
    info: ModelInfo

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray: ...

    def predict_files(self, files: list[Path]) -> np.ndarray: ...


class Decoder(Protocol):
    """What the pipeline needs from a decoding pool (see scorer.workers.DecodePool)."""

    def imap(
        self, paths: Sequence[Path], ahead: int = ..., stop: Callable[[], bool] = ...
    ) -> Iterator[tuple[Path, Decoded | ImageError]]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Item:
    """A file to score and the name the report shows for it."""

    path: Path
    name: str


Progress = Callable[[int], None]


def score_items(
    items: Sequence[Item],
    model: Model,
    pool: Decoder,
    *,
    known: Callable[[str], Scored | None] = lambda sha: None,
    progress: Progress = lambda n: None,
    stop: Callable[[], bool] = lambda: False,
) -> BatchResult:
    """Decode, vet and score items in bounded batches; every item ends up scored, rejected or a duplicate.

    `known` looks up content scored earlier (the watch service's ledger). When `stop`
    turns true the batch is abandoned and the partial result returned.
    """
    result = BatchResult()
    by_path = {item.path: item for item in items}
    first_seen: dict[str, Item] = {}
    waiting: list[tuple[Item, Decoded]] = []
    duplicates_of_new: list[tuple[Item, str]] = []

    def flush() -> None:
        if not waiting:
            return
        if model.geometry is not None:
            pixels = [decoded.pixels for _, decoded in waiting if decoded.pixels is not None]
            probs = model.predict_pixels(np.stack(pixels))
        else:
            probs = model.predict_files([item.path for item, _ in waiting])
        now = time.time()
        for (item, decoded), p in zip(waiting, probs, strict=True):
            result.scored.append(_scored(item, decoded, model.classes, p, now))
        progress(len(waiting))
        waiting.clear()

    for path, outcome in pool.imap([item.path for item in items], ahead=2 * model.batch_size, stop=stop):
        if stop():
            return result
        item = by_path[path]
        if isinstance(outcome, ImageError):
            result.rejected.append(Rejected(item.name, str(item.path), str(outcome)))
            progress(1)
            continue
        earlier = known(outcome.sha256)
        if earlier is not None:
            result.duplicates.append(Duplicate(item.name, str(item.path), earlier))
            progress(1)
        elif outcome.sha256 in first_seen:
            duplicates_of_new.append((item, outcome.sha256))
        else:
            first_seen[outcome.sha256] = item
            waiting.append((item, outcome))
            if len(waiting) >= model.batch_size:
                flush()
    flush()
    by_sha = {s.sha256: s for s in result.scored}
    for item, sha in duplicates_of_new:
        result.duplicates.append(Duplicate(item.name, str(item.path), by_sha[sha]))
        progress(1)
    return result


def _scored(item: Item, decoded: Decoded, classes: tuple[str, ...], probs: np.ndarray, now: float) -> Scored:
    return Scored(
        name=item.name,
        location=str(item.path),
        sha256=decoded.sha256,
        classes=classes,
        probs=tuple(float(p) for p in probs),
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        file_bytes=decoded.file_bytes,
        modified=decoded.modified,
        scored_at=now,
        thumbnail=decoded.thumbnail,
        notes="; ".join(decoded.notes),
    )


class Engine:
    """A classifier and a decoding pool, kept together for the life of the process."""

    def __init__(self, model: Model, pool: Decoder) -> None:
        self.model = model
        self.pool = pool

    def score(
        self,
        items: Sequence[Item],
        *,
        known: Callable[[str], Scored | None] = lambda sha: None,
        progress: Progress = lambda n: None,
        stop: Callable[[], bool] = lambda: False,
    ) -> BatchResult:
        """Score items with this engine's model and workers (see `score_items`)."""
        return score_items(items, self.model, self.pool, known=known, progress=progress, stop=stop)

    def close(self) -> None:
        """Stop the decoding workers."""
        self.pool.close()


def open_engine(settings: Settings, decode: DecodeFn | None = None) -> Engine:
    """Load the configured model (once) and start its decoding workers."""
    from scorer.model import Classifier

    classifier = Classifier(settings)
    limits = ImageLimits.from_settings(settings.images)
    thumb_px = settings.report.thumbnail_px if settings.report.thumbnails else 0
    job = DecodeJob(classifier.geometry, limits, thumb_px, decode or decode_file)
    pool = DecodePool(job, settings.images.decode_workers, settings.images.decode_timeout)
    return Engine(classifier, pool)
