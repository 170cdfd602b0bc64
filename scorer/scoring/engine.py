"""The engine: the one place where decoding, the model and the results meet, for a batch of files."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import KW_ONLY, dataclass, replace
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from scorer.checks.decode_check import DecodeCheck
from scorer.checks.precision import PrecisionCheck
from scorer.context.plan import Plan, Plans
from scorer.decoding.decode import Decoded, ItemGeometry
from scorer.errors import ImageError, TransientImageError
from scorer.results import (
    Advice,
    BatchResult,
    Duplicate,
    Lookalikes,
    ModelInfo,
    Progress,
    Rejected,
    Scored,
    engagement_score,
)


class Predictor(Protocol):
    """What the engine needs from a classifier: scorer.scoring.classifier.Classifier, or a test's fake."""

    classes: tuple[str, ...]
    geometry: ItemGeometry | None  # None: transforms the fast engine does not know, so files go to predict_files
    batch_size: int

    def predict_with_embedding(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities (N, K), lowest class first, for uint8 pixels (N, H, W, 3), and the embedding (N, D) of
        the same forward pass, None for a model that gives none."""
        ...

    def predict_files(self, files: list[Path]) -> np.ndarray:
        """Probabilities (N, K) for files, the learner decoding them itself (geometry None)."""
        ...


class LookalikeSearch(Protocol):
    """What the engine needs from an evidence index (see scorer.evidence.index.EvidenceIndex)."""

    def lookup(self, embedding: np.ndarray, scores: np.ndarray) -> list[Lookalikes]: ...


class AdviceSource(Protocol):
    """What the engine needs for posting-time advice (see scorer.context.advice.Advisor)."""

    @property
    def in_use(self) -> bool: ...

    def advise(self, embedding: np.ndarray | None, plans: Sequence[Plan | None]) -> list[tuple[Advice | None, str]]: ...


class Explain(Protocol):
    """What the engine needs from Grad-CAM (see scorer.evidence.gradcam.Explainer)."""

    def overlays(self, pixels: np.ndarray, classes: Sequence[int] | None = None) -> list[bytes]: ...


@dataclass(frozen=True)
class Enrichment:
    """Evidence for the report, beyond the prediction: look-alike past posts and where the model looked."""

    index: LookalikeSearch | None = None
    explainer: Explain | None = None
    #: Grad-CAM runs for calls of score_items with at most this many items.
    explain_up_to: int = 0
    advisor: AdviceSource | None = None


class Decoder(Protocol):
    """What the engine needs from a decoding pool (see scorer.decoding.pool.DecodePool)."""

    def imap(
        self, paths: Sequence[Path], ahead: int = ..., stop: Callable[[], bool] = ...,
        geometry: Callable[[], ItemGeometry | None] | None = ...,
    ) -> Iterator[tuple[Path, Decoded | ImageError]]: ...

    def close(self) -> None: ...


_ItemT = TypeVar("_ItemT", bound="Item")  # an Item or a subclass of it (ledger.schema.Candidate)


@dataclass(frozen=True)
class Item:
    """A file to score, the name the report shows for it, and its planned post (scorer.context.plan)."""

    path: Path
    name: str
    _: KW_ONLY  # keyword-only, so a subclass (ledger.schema.Candidate) adds its own fields in order
    plan: Plan | None = None
    plan_note: str = ""  # why a plan that was given cannot be used (a rejected sidecar)

    def planned(self: _ItemT, plans: Plans) -> _ItemT:
        """This item with its plan from `plans` (context.plan.find_plans), or the note that says why it has none."""
        return replace(self, plan=plans.found.get(self.path), plan_note=plans.notes.get(self.path, ""))


def score_items(
    items: Sequence[Item],
    model: Predictor,
    pool: Decoder,
    *,
    known: Callable[[str], Scored | None] = lambda sha: None,
    progress: Progress = lambda n: None,
    stop: Callable[[], bool] = lambda: False,
    enrichment: Enrichment = Enrichment(),
    check: DecodeCheck | None = None,
) -> BatchResult:
    """Decode, vet and score items in bounded batches; every item ends up scored, rejected or a duplicate.

    `known` looks up content scored earlier (the watch service's ledger). When `stop`
    turns true the batch is abandoned and the partial result returned. `check`, the model's
    decode check, decides how each JPEG is decoded.
    """
    if enrichment.explainer is not None and len(items) > enrichment.explain_up_to:
        enrichment = replace(enrichment, explainer=None)
    run = _Batcher(model, known, progress, enrichment, check)
    by_path = {item.path: item for item in items}
    geometry = check.geometry if check is not None and model.geometry is not None else None
    paths = [item.path for item in items]
    for path, reply in pool.imap(paths, ahead=2 * model.batch_size, stop=stop, geometry=geometry):
        if stop():
            return run.result
        run.take(by_path[path], reply)
    run.finish()
    return run.result


class _Batcher:
    """One call of score_items: decoded items wait here until a model batch is full."""

    def __init__(self, model: Predictor, known: Callable[[str], Scored | None], progress: Progress,
                 enrichment: Enrichment, check: DecodeCheck | None) -> None:
        self.result = BatchResult()
        self._model, self._known, self._progress = model, known, progress
        self._enrichment, self._check = enrichment, check
        self._first_seen: set[str] = set()
        self._waiting: list[tuple[Item, Decoded]] = []
        self._duplicates_of_new: list[tuple[Item, str]] = []

    def take(self, item: Item, reply: Decoded | ImageError) -> None:
        if isinstance(reply, ImageError):
            transient = isinstance(reply, TransientImageError)
            self.result.rejected.append(Rejected(item.name, str(item.path), str(reply), transient=transient))
            self._progress(1)
            return
        earlier = self._known(reply.sha256)
        if earlier is not None:
            self.result.duplicates.append(Duplicate(item.name, str(item.path), earlier))
            self._progress(1)
        elif reply.sha256 in self._first_seen:
            self._duplicates_of_new.append((item, reply.sha256))
        else:
            self._first_seen.add(reply.sha256)
            self._waiting.append((item, reply))
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
        n = len(self._waiting)
        evidence: Sequence[Lookalikes | None] = [None] * n
        overlays: Sequence[bytes | None] = [None] * n
        embedding = None
        if model.geometry is not None:
            pixels = np.stack([decoded.pixels for _, decoded in self._waiting if decoded.pixels is not None])
            probs, embedding, evidence = self._predict(pixels)
            self._observe(probs)
            if self._enrichment.explainer is not None:
                overlays = self._enrichment.explainer.overlays(pixels, probs.argmax(axis=1).tolist())
        else:
            probs = model.predict_files([item.path for item, _ in self._waiting])
        now = time.time()
        advice = self._advise(embedding)
        kept: Sequence[bytes | None] = [None] * n if embedding is None else [
            row.astype(np.float16).tobytes() for row in embedding]
        for (item, decoded), p, ev, overlay, (adv, note), feats in zip(self._waiting, probs, evidence, overlays,
                                                                        advice, kept, strict=True):
            scored = _scored(item, decoded, model.classes, p, now, ev, overlay)
            notes = "; ".join(text for text in (scored.notes, note) if text)
            self.result.scored.append(dataclasses.replace(scored, advice=adv, notes=notes, embedding=feats))
        self._progress(n)
        self._waiting.clear()

    def _predict(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, Sequence[Lookalikes | None]]:
        """One forward pass: probabilities, and the embedding that evidence and advice need, from the same pass."""
        # the embedding is kept whenever the model gives one, so a launched post can be matched back (scorer.outcomes)
        probs, embedding = self._model.predict_with_embedding(pixels)
        index = self._enrichment.index
        if embedding is None or index is None:
            return probs, embedding, [None] * len(pixels)
        return probs, embedding, index.lookup(embedding, np.array([engagement_score(p) for p in probs]))

    def _advise(self, embedding: np.ndarray | None) -> list[tuple[Advice | None, str]]:
        """Each waiting creative's posting-time advice, or the note that says it was scored image-only."""
        advisor = self._enrichment.advisor
        if advisor is None:
            return [(None, item.plan_note) for item, _ in self._waiting]
        answers = advisor.advise(embedding, [item.plan for item, _ in self._waiting])
        return [(adv, item.plan_note or note) for (item, _), (adv, note) in zip(self._waiting, answers, strict=True)]

    def _observe(self, probs: np.ndarray) -> None:
        """Hand creatives decoded both ways to the decode check, which learns from them (Engine.info reads it)."""
        rows = [i for i, (_, decoded) in enumerate(self._waiting) if decoded.probe is not None]
        if self._check is None or not rows:
            return
        probes = [self._waiting[i][1].probe for i in rows]
        # the check runs the drafted pixels through the predictor it was opened with (Classifier.predict_fp32)
        self._check.observe(probs[rows], [p for p in probes if p is not None])



def _scored(item: Item, decoded: Decoded, classes: tuple[str, ...], probs: np.ndarray, now: float,
            evidence: Lookalikes | None, overlay: bytes | None) -> Scored:
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
        evidence=evidence,
        overlay=overlay,
        prints=decoded.prints,
    )


class Engine:
    """A classifier and a decoding pool, kept together for the life of the process, with what reports say of them."""

    def __init__(self, model: Predictor, pool: Decoder, opened: ModelInfo, enrichment: Enrichment = Enrichment(),
                 check: DecodeCheck | None = None, precision: PrecisionCheck | None = None) -> None:
        """`opened`: the model as it was opened (scoring.assembly); `check` and `precision`: its decode and
        precision checks, which choose how its creatives are decoded and run, and learn from the first ones."""
        self.model = model
        self.pool = pool
        self.opened = opened
        self.enrichment = enrichment
        self.check = check
        self.precision = precision

    @property
    def info(self) -> ModelInfo:
        """What the Model sheet of a report made now says: the model as opened, with the modes its checks are in
        now (they change as the first creatives are checked), read from the checks and never kept."""
        opened, check, precision = self.opened, self.check, self.precision
        return replace(opened, decode=check.describe() if check is not None else opened.decode,
                       runtime=precision.runtime.name if precision is not None else opened.runtime,
                       precision=precision.describe() if precision is not None else opened.precision)

    def score(
        self,
        items: Sequence[Item],
        *,
        known: Callable[[str], Scored | None] = lambda sha: None,
        progress: Progress = lambda n: None,
        stop: Callable[[], bool] = lambda: False,
    ) -> BatchResult:
        """Score items with this engine's model and workers (see `score_items`)."""
        return score_items(items, self.model, self.pool, known=known, progress=progress, stop=stop,
                           enrichment=self.enrichment, check=self.check)

    def close(self) -> None:
        """Stop the decoding workers."""
        self.pool.close()
