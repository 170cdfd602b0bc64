"""The engine: the one place where decoding, the model and the results meet, for a batch of files."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import KW_ONLY, dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from scorer.checks.decode_check import DecodeCheck
from scorer.checks.precision import PrecisionCheck
from scorer.context.plan import Plan, Plans
from scorer.decoding import reasons
from scorer.decoding.decode import Decoded
from scorer.decoding.video import DecodedVideo
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
    Video,
    engagement_score,
)
from scorer.scoring.frames import combine, stack
from scorer.scoring.protocols import Decoder, Enrichment, Predictor

NO_ENRICHMENT = Enrichment()  # neither evidence, Grad-CAM nor advice
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
    enrichment: Enrichment = NO_ENRICHMENT,
    check: DecodeCheck | None = None,
    hook_weight: float = 0.6,
) -> BatchResult:
    """Decode, vet and score items in bounded batches; every item ends up scored, rejected or a duplicate.

    `known` looks up content scored earlier (the watch service's ledger). When `stop`
    turns true the batch is abandoned and the partial result returned. `check`, the model's
    decode check, decides how each JPEG is decoded. `hook_weight`: a video's hook's share of its answer
    (video.hook_weight).
    """
    if enrichment.explainer is not None and len(items) > enrichment.explain_up_to:
        enrichment = replace(enrichment, explainer=None)
    run = _Batcher(model, known, progress, enrichment, check, hook_weight)
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
                 enrichment: Enrichment, check: DecodeCheck | None, hook_weight: float) -> None:
        self.result = BatchResult()
        self._model, self._known, self._progress = model, known, progress
        self._enrichment, self._check, self._hook_weight = enrichment, check, hook_weight
        self._first_seen: set[str] = set()
        self._waiting: list[tuple[Item, Decoded]] = []
        self._frames = 0  # frames waiting: a still's one, a video's sampled ones
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
            self._frames += len(reply.times) if isinstance(reply, DecodedVideo) else 1
            if self._frames >= self._model.batch_size:
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
        if self._model.geometry is None:
            self._flush_files()
            return
        decoded = [d for _, d in self._waiting]
        pixels, starts = stack(decoded)
        frame_probs, frame_embedding = self._model.predict_with_embedding(pixels)
        answers = combine(decoded, starts, frame_probs, frame_embedding, self._hook_weight)
        self._observe(answers.probs)
        overlays: Sequence[bytes | None] = [None] * len(decoded)
        if self._enrichment.explainer is not None:
            overlays = self._enrichment.explainer.overlays(pixels[answers.explained],
                                                            answers.probs.argmax(axis=1).tolist())
        self._append(answers.probs, answers.embedding, overlays, answers.videos)

    def _flush_files(self) -> None:
        """A learner whose transforms the engine does not know decodes its stills itself (fastai's test_dl)."""
        stills = []
        for item, decoded in self._waiting:
            if isinstance(decoded, DecodedVideo):  # test_dl opens images only
                self.result.rejected.append(Rejected(item.name, str(item.path), reasons.VIDEO_NEEDS_KNOWN_RESIZE))
                self._progress(1)
            else:
                stills.append((item, decoded))
        self._waiting = stills
        if stills:
            probs = self._model.predict_files([item.path for item, _ in stills])
            self._append(probs, None, [None] * len(stills), [None] * len(stills))

    def _append(self, probs: np.ndarray, embedding: np.ndarray | None, overlays: Sequence[bytes | None],
                videos: Sequence[Video | None]) -> None:
        """The waiting creatives as scored, with their evidence and advice; then the next batch waits."""
        index = self._enrichment.index
        evidence: Sequence[Lookalikes | None] = [None] * len(probs)
        if embedding is not None and index is not None:
            evidence = index.lookup(embedding, np.array([engagement_score(p) for p in probs]))
        # the embedding is kept whenever the model gives one, so a launched post can be matched back (scorer.outcomes)
        kept: Sequence[bytes | None] = [None] * len(probs) if embedding is None else [
            row.astype(np.float16).tobytes() for row in embedding]
        now = time.time()
        for (item, decoded), p, ev, overlay, (adv, note), emb, video in zip(
                self._waiting, probs, evidence, overlays, self._advise(embedding), kept, videos, strict=True):
            notes = "; ".join(text for text in (*decoded.notes, note) if text)
            self.result.scored.append(_scored(item, decoded, self._model.classes, p, now, notes,
                                              Enrichments(ev, overlay, adv, emb, video)))
        self._progress(len(probs))
        self._waiting.clear()
        self._frames = 0

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



@dataclass(frozen=True)
class Enrichments:
    """What one creative's result gains beside its probabilities."""

    evidence: Lookalikes | None
    overlay: bytes | None
    advice: Advice | None
    embedding: bytes | None
    video: Video | None


def _scored(item: Item, decoded: Decoded, classes: tuple[str, ...], probs: np.ndarray, now: float, notes: str,
            more: Enrichments) -> Scored:
    return Scored(
        name=item.name, location=str(item.path), sha256=decoded.sha256, classes=classes,
        probs=tuple(float(p) for p in probs), width=decoded.width, height=decoded.height, format=decoded.format,
        file_bytes=decoded.file_bytes, modified=decoded.modified, scored_at=now, thumbnail=decoded.thumbnail,
        notes=notes, evidence=more.evidence, overlay=more.overlay, advice=more.advice, prints=decoded.prints,
        embedding=more.embedding, video=more.video,
    )


class Engine:
    """A classifier and a decoding pool, kept together for the life of the process, with what reports say of them."""

    def __init__(self, model: Predictor, pool: Decoder, opened: ModelInfo, enrichment: Enrichment = NO_ENRICHMENT,
                 check: DecodeCheck | None = None, precision: PrecisionCheck | None = None,
                 hook_weight: float = 0.6) -> None:
        """`opened`: the model as it was opened (scoring.assembly); `check` and `precision`: its decode and
        precision checks, which choose how its creatives are decoded and run, and learn from the first ones;
        `hook_weight`: a video's hook's share of its answer (video.hook_weight)."""
        self.model = model
        self.pool = pool
        self.opened = opened
        self.enrichment = enrichment
        self.check = check
        self.precision = precision
        self.hook_weight = hook_weight

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
                           enrichment=self.enrichment, check=self.check, hook_weight=self.hook_weight)

    def close(self) -> None:
        """Stop the decoding workers."""
        self.pool.close()
