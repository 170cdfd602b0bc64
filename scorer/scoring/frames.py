"""A model batch's frames: each still's pixels and each video's sampled frames, stacked for one forward pass,
then each video's frames combined into its one answer (scorer.decoding.video's frame_weights).

A video's probabilities and embedding are the weighted mean of its frames' (the hook weighing
`video.hook_weight`); its Grad-CAM is drawn on the hook's frame that holds its predicted class most.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scorer.decoding.decode import Decoded
from scorer.decoding.video import DecodedVideo, frame_weights
from scorer.results import Frame, Video, engagement_score
from scorer.scoring.protocols import Predictor


@dataclass(frozen=True)
class Answers:
    """One forward pass's answers, one row per creative: probabilities, embedding, the frame Grad-CAM explains."""

    probs: np.ndarray  # (N, K), lowest class first
    embedding: np.ndarray | None  # (N, D), or None for a model that gives none
    explained: list[int]  # per creative, the row of `pixels` its overlay is drawn on
    videos: list[Video | None]  # per creative, a video's length and sampled frames with their own scores


def stack(decoded: Sequence[Decoded]) -> tuple[np.ndarray, list[int]]:
    """Every creative's frames as one uint8 batch (a still's one, a video's sampled ones), and where each starts."""
    parts = [d.pixels if isinstance(d, DecodedVideo) else d.pixels[None] for d in decoded if d.pixels is not None]
    starts = np.cumsum([0, *(len(part) for part in parts)]).tolist()
    return np.concatenate(parts), starts


def predict_frames(model: Predictor, decoded: Sequence[Decoded], hook_weight: float, batch_size: int) -> Answers:
    """Each creative's answer from its frames', the frames run through the model in passes of at most batch_size
    (where the caller has not sized its batch by frames, as the engine does)."""
    pixels, starts = stack(decoded)
    passes = [model.predict_with_embedding(np.ascontiguousarray(pixels[first:first + batch_size]))
              for first in range(0, len(pixels), batch_size)]
    found = [embedding for _, embedding in passes if embedding is not None]
    embedding = np.concatenate(found) if len(found) == len(passes) else None
    return combine(decoded, starts, np.concatenate([probs for probs, _ in passes]), embedding, hook_weight)


def combine(decoded: Sequence[Decoded], starts: Sequence[int], probs: np.ndarray, embedding: np.ndarray | None,
            hook_weight: float) -> Answers:
    """Each creative's answer from its frames' answers: a still's own, a video's weighted over its frames."""
    rows, embeds, explained = [], [], []
    videos: list[Video | None] = []
    for d, first, end in zip(decoded, starts[:-1], starts[1:], strict=True):
        if not isinstance(d, DecodedVideo):
            rows.append(probs[first])
            embeds.append(None if embedding is None else embedding[first])
            explained.append(first)
            videos.append(None)
            continue
        weights = frame_weights(d.in_hook, hook_weight)
        answer = weights @ probs[first:end]
        rows.append(answer)
        embeds.append(None if embedding is None else weights @ embedding[first:end])
        explained.append(first + _strongest_hook_frame(probs[first:end], d.in_hook, int(np.argmax(answer))))
        videos.append(_video(d, probs[first:end]))
    stacked = None if embedding is None else np.stack([e for e in embeds if e is not None]).astype(embedding.dtype)
    return Answers(np.stack(rows), stacked, explained, videos)


def _strongest_hook_frame(probs: np.ndarray, in_hook: Sequence[bool], predicted: int) -> int:
    """The hook's frame (any frame, in a video without one) that gives the video's predicted class most."""
    candidates = [i for i, hook in enumerate(in_hook) if hook] or list(range(len(probs)))
    return max(candidates, key=lambda i: float(probs[i, predicted]))


def _video(d: DecodedVideo, probs: np.ndarray) -> Video:
    thumbs: Sequence[bytes | None] = d.frame_thumbnails or [None] * len(d.times)
    frames = tuple(Frame(t, hook, engagement_score(p), thumb)
                   for t, hook, p, thumb in zip(d.times, d.in_hook, probs, thumbs, strict=True))
    return Video(d.duration, frames, d.codec)
