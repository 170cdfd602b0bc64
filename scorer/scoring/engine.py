"""The engine: the one place where decoding, the model and the results meet, for a batch of files."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from scorer.errors import ImageError
from scorer.results import BatchResult, Duplicate, ModelInfo, Rejected, Scored
from scorer.scoring.decode import Decoded, ItemGeometry, decode_file
from scorer.scoring.decode_check import DecodeCheck, open_check
from scorer.scoring.decode_pool import DecodeFn, DecodeJob, DecodePool
from scorer.scoring.vet import ImageLimits
from scorer.settings import Settings


class Model(Protocol):
    """What the engine needs from a classifier (see scorer.scoring.model.Classifier)."""

    classes: tuple[str, ...]
    geometry: ItemGeometry | None
    batch_size: int
    info: ModelInfo

    def predict_pixels(self, pixels: np.ndarray) -> np.ndarray: ...

    def predict_files(self, files: list[Path]) -> np.ndarray: ...


class Decoder(Protocol):
    """What the engine needs from a decoding pool (see scorer.scoring.decode_pool.DecodePool)."""

    def imap(
        self, paths: Sequence[Path], ahead: int = ..., stop: Callable[[], bool] = ...,
        plan: Callable[[], ItemGeometry | None] | None = ...,
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
    check: DecodeCheck | None = None,
) -> BatchResult:
    """Decode, vet and score items in bounded batches; every item ends up scored, rejected or a duplicate.

    `known` looks up content scored earlier (the watch service's ledger). When `stop`
    turns true the batch is abandoned and the partial result returned. `check`, the model's
    decode check, decides how each JPEG is decoded.
    """
    run = _Run(model, known, progress, check)
    by_path = {item.path: item for item in items}
    plan = check.plan if check is not None and model.geometry is not None else None
    for path, outcome in pool.imap([item.path for item in items], ahead=2 * model.batch_size, stop=stop, plan=plan):
        if stop():
            return run.result
        run.take(by_path[path], outcome)
    run.finish()
    return run.result


class _Run:
    """One call of score_items: decoded items wait here until a model batch is full."""

    def __init__(self, model: Model, known: Callable[[str], Scored | None], progress: Progress,
                 check: DecodeCheck | None) -> None:
        self.result = BatchResult()
        self._model, self._known, self._progress, self._check = model, known, progress, check
        self._first_seen: set[str] = set()
        self._waiting: list[tuple[Item, Decoded]] = []
        self._duplicates_of_new: list[tuple[Item, str]] = []

    def take(self, item: Item, outcome: Decoded | ImageError) -> None:
        if isinstance(outcome, ImageError):
            self.result.rejected.append(Rejected(item.name, str(item.path), str(outcome)))
            self._progress(1)
            return
        earlier = self._known(outcome.sha256)
        if earlier is not None:
            self.result.duplicates.append(Duplicate(item.name, str(item.path), earlier))
            self._progress(1)
        elif outcome.sha256 in self._first_seen:
            self._duplicates_of_new.append((item, outcome.sha256))
        else:
            self._first_seen.add(outcome.sha256)
            self._waiting.append((item, outcome))
            if len(self._waiting) >= self._model.batch_size:
                self._flush()

    def finish(self) -> None:
        self._flush()
        by_sha = {s.sha256: s for s in self.result.scored}
        for item, sha in self._duplicates_of_new:
            self.result.duplicates.append(Duplicate(item.name, str(item.path), by_sha[sha]))
            self._progress(1)

    def _flush(self) -> None:
        if not self._waiting:
            return
        model = self._model
        if model.geometry is not None:
            pixels = [decoded.pixels for _, decoded in self._waiting if decoded.pixels is not None]
            probs = model.predict_pixels(np.stack(pixels))
            self._observe(probs)
        else:
            probs = model.predict_files([item.path for item, _ in self._waiting])
        now = time.time()
        for (item, decoded), p in zip(self._waiting, probs, strict=True):
            self.result.scored.append(_scored(item, decoded, model.classes, p, now))
        self._progress(len(self._waiting))
        self._waiting.clear()

    def _observe(self, probs: np.ndarray) -> None:
        """Hand creatives decoded both ways to the decode check; the Model sheet follows its decision."""
        rows = [i for i, (_, decoded) in enumerate(self._waiting) if decoded.probe is not None]
        if self._check is None or not rows:
            return
        probes = [self._waiting[i][1].probe for i in rows]
        if self._check.observe(probs[rows], [p for p in probes if p is not None], self._model.predict_pixels):
            self._model.info = dataclasses.replace(self._model.info, decode=self._check.describe())


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

    def __init__(self, model: Model, pool: Decoder, check: DecodeCheck | None = None) -> None:
        self.model = model
        self.pool = pool
        self.check = check

    def score(
        self,
        items: Sequence[Item],
        *,
        known: Callable[[str], Scored | None] = lambda sha: None,
        progress: Progress = lambda n: None,
        stop: Callable[[], bool] = lambda: False,
    ) -> BatchResult:
        """Score items with this engine's model and workers (see `score_items`)."""
        return score_items(items, self.model, self.pool, known=known, progress=progress, stop=stop, check=self.check)

    def close(self) -> None:
        """Stop the decoding workers."""
        self.pool.close()


def open_engine(settings: Settings, decode: DecodeFn | None = None) -> Engine:
    """Load the configured model (once) and start its decoding workers."""
    from scorer.scoring.model import Classifier

    classifier = Classifier(settings)
    check = None
    if classifier.geometry is not None:
        check = open_check(classifier.geometry, settings.images.decode, classifier.info.sha256, settings.state,
                           classifier.predict_pixels)
        classifier.info = dataclasses.replace(classifier.info, decode=check.describe())
    limits = ImageLimits.from_settings(settings.images)
    thumb_px = settings.report.thumbnail_px if settings.report.thumbnails else 0
    job = DecodeJob(classifier.geometry, limits, thumb_px, decode or decode_file)
    pool = DecodePool(job, settings.images.decode_workers, settings.images.decode_timeout)
    return Engine(classifier, pool, check)
