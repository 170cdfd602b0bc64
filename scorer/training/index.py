"""Build the evidence index of a model from past posts (`scorer train` and `scorer index`), and judge its kNN estimate.

Each post is decoded and preprocessed exactly as scoring does it (the scoring Classifier's own
geometry, batch transforms and runtime), so its embedding is comparable with a creative's. A video
post with its video is its frames, their probabilities and embeddings weighed as scoring weighs them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scorer.decoding.decode import Decoded, decode_file
from scorer.decoding.vet import ImageLimits
from scorer.decoding.video import decode_video
from scorer.decoding.video_probe import VideoLimits
from scorer.errors import ImageError, ModelError
from scorer.evidence.index import NEIGHBOURS, EvidenceIndex, index_path, write_index
from scorer.fsutil import atomic_write, sha256_file
from scorer.model.integrity import remember_pin
from scorer.results import engagement_score
from scorer.scoring.classifier import Classifier
from scorer.scoring.frames import predict_frames
from scorer.settings import Settings
from scorer.training.compare import Comparison, Way, compare
from scorer.training.labels import class_numbers, learner_classes
from scorer.training.prepare import prepare

log = logging.getLogger(__name__)

#: Longest side of a past post's thumbnail in the index and the report.
THUMB_PX = 64


@dataclass(frozen=True)
class IndexRun:
    """An evidence index written beside its model, and how its kNN estimate compares on the held-out posts.

    Its posts' labels are named as the learner's `classes` (lowest first), like its predictions.
    """

    path: Path
    sha256: str
    posts: int
    comparison: Comparison | None
    classes: tuple[str, ...]
    frame: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False, compare=False)

    def card_entry(self) -> dict[str, object]:
        """The index's section of the model card."""
        return {"file": self.path.name, "sha256": self.sha256, "posts": self.posts}


def scoring_classifier(settings: Settings, model: Path, sha256: str | None) -> Classifier:
    """The classifier exactly as scoring loads it, without Grad-CAM's PyTorch copy; refused when it has no embedding."""
    quiet = dataclasses.replace(settings, model=model, model_sha256=sha256,
                                report=dataclasses.replace(settings.report, explain="never"))
    classifier = Classifier(quiet)
    if not classifier.has_embedding:
        raise ModelError(f"{model} gives no embedding (it is not shaped as fastai's vision_learner builds it, "
                         "or its transforms are not ones the fast engine knows): it can score, but not be indexed")
    return classifier


def build_index(settings: Settings, classifier: Classifier, table: pd.DataFrame, model: Path) -> IndexRun:
    """Embed every post of `table` (prepared posts), write `<stem>.index.parquet` beside the model and pin it."""
    # Checked before the slow embedding: labels that cannot be told in the learner's classes stop here.
    as_class = learner_classes(settings.train.label.classes, classifier.classes)
    table = table.assign(label=table["label"].map(as_class))
    limits = ImageLimits.from_settings(settings.images), VideoLimits.from_settings(settings.video)
    rows: list[dict[str, object]] = []
    for start in range(0, len(table), classifier.batch_size):
        rows += _embed(classifier, table.iloc[start:start + classifier.batch_size], limits, settings.video.hook_weight)
    frame = pd.DataFrame(rows)
    path = index_path(model)
    write_index(path, frame, classifier.sha256)
    sha = sha256_file(path)
    remember_pin(settings, path, sha)
    index = EvidenceIndex(frame, classifier.sha256, path)
    comparison = knn_comparison(index, classifier.classes, settings.train.bootstrap, settings.train.seed)
    log.info("evidence index %s: %d posts", path, len(frame))
    return IndexRun(path, sha, len(frame), comparison, classifier.classes, frame)


def _embed(classifier: Classifier, posts: pd.DataFrame, limits: tuple[ImageLimits, VideoLimits],
           hook_weight: float) -> list[dict[str, object]]:
    decoded: list[Decoded] = []
    kept = []
    for post in posts.itertuples():
        try:
            decoded.append(decode_video(Path(post.video), classifier.geometry, limits[1], THUMB_PX) if post.video
                           else decode_file(Path(post.image), classifier.geometry, limits[0], THUMB_PX))
            kept.append(post)
        except ImageError as exc:  # vetted at import, so only a file changed since then lands here
            log.warning("left out of the index: %s (%s)", post.source, exc)
    if not decoded:
        return []
    probs, embedding = _predict(classifier, decoded, hook_weight)
    return [{"source": post.source, "date": _date(post.posted_at), "likes": int(post.likes),
             "comments": int(post.comments), "total": int(post.total), "label": str(post.label),
             "split": "valid" if post.is_valid else "train", "thumbnail": d.thumbnail,
             "embedding": feature.astype(np.float32), "score": engagement_score(p),
             "predicted": classifier.classes[int(np.argmax(p))]}
            for post, d, p, feature in zip(kept, decoded, probs, embedding, strict=True)]


def _predict(classifier: Classifier, decoded: list[Decoded], hook_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """Each post's probabilities and embedding as scoring gives a creative's: a still's own, a video's frames'
    weighed (scorer.scoring.frames), in batches of the classifier's size."""
    answers = predict_frames(classifier, decoded, hook_weight, classifier.batch_size)
    assert answers.embedding is not None  # scoring_classifier refused a model without one
    return answers.probs, answers.embedding


def _date(value: object) -> str:
    return "" if value is None or pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d")


def knn_comparison(index: EvidenceIndex, classes: Sequence[str], bootstrap: int, seed: int) -> Comparison | None:
    """kNN estimate (neighbours among the training posts), classifier and majority baseline on the held-out posts.

    The index's labels and predictions are both named as the learner's `classes`.
    """
    frame = index.frame
    train, valid = (frame["split"] == "train").to_numpy(), (frame["split"] == "valid").to_numpy()
    if not train.any() or not valid.any():
        return None
    labels = class_numbers(frame["label"], classes)
    vectors = np.stack(frame.loc[valid, "embedding"].to_numpy())
    rows, _ = index.nearest(vectors, NEIGHBOURS, among=train)
    votes = labels[rows]
    knn = np.array([_vote(v) for v in votes])
    majority = int(np.bincount(labels[train], minlength=len(classes)).argmax())
    y_true = labels[valid]
    ways = [
        Way(f"kNN estimate ({NEIGHBOURS} nearest posts)", knn, index.median_totals(rows)),
        Way("Classifier", class_numbers(frame.loc[valid, "predicted"], classes), frame.loc[valid, "score"].to_numpy()),
        Way(f"Majority baseline (always {classes[majority]})", np.full(len(y_true), majority), None),
    ]
    return compare(ways, y_true, frame.loc[valid, "total"].to_numpy(), bootstrap, seed)


def _vote(labels: np.ndarray) -> int:
    """The most common class among the neighbours; a tie goes to the nearest one's class."""
    counts = np.bincount(labels)
    tied = np.flatnonzero(counts == counts.max())
    return int(next(label for label in labels if label in tied))


def index_posts(settings: Settings, data: Path) -> IndexRun:
    """`scorer index`: build the configured model's evidence index from a posts.csv or Instaloader folder."""
    table = prepare(settings, data).table  # before the model opens: a wrong folder is told at once, as in training
    classifier = scoring_classifier(settings, settings.model, settings.model_sha256)
    run = build_index(settings, classifier, table, settings.model)
    card = settings.model.with_suffix(".card.json")
    if card.is_file():  # a model from `scorer train`: its card names the index it is pinned with
        facts = json.loads(card.read_text(encoding="utf-8"))
        facts["index"] = run.card_entry()
        atomic_write(card, json.dumps(facts, indent=2, default=str))
    return run
