"""Which launched post is which scored creative: perceptual hashes and embedding, one to one.

A still has one set of prints; a video has one per sampled frame (its likeness keeps them one frame
after another), and a launched video is sampled as scoring sampled it. A post's hash agreement with a
creative is the mean over the post's frames of each one's agreement with the creative's most alike
frame among those it is compared with. A Reel sampled into as many frames as a scored video is
compared in order: its frame i with the video's frames i - 1, i and i + 1 (a frame the decoder took
once for two samples shifts the rest), so a re-encoded, resized Reel agrees frame by frame whatever
keyframes its encoder chose, and the same shots in another order are another video. Otherwise (a
cover alone, which may be any frame of its video, or frames sampled differently) each frame is
compared with every frame. Stills compare as one frame against one, as they always did.

Every post is compared with every creative as matrices, a chunk of posts at a time, so 10,000 posts
against 30,000 creatives stay within seconds and a bounded amount of memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scorer.decoding.prints import BITS_PER_PRINT, BYTES_PER_PRINT, CROPS

_WORDS = BYTES_PER_PRINT // 8
_FRAME_BYTES = len(CROPS) * BYTES_PER_PRINT
# How much the embedding weigh against the hashes where both sides have them: the hashes carry the
# match (they see the whole picture, the embedding only the model's crop of it), the embedding break
# ties between near-identical variants and keep likeness-alike pictures from passing on the hashes alone.
FEATURE_WEIGHT = 0.3
_CHUNK = 256  # post frames compared at once: about 256 × creatives' frames × 17 bytes in flight...
_CELLS = _CHUNK * 32768  # ...and at most this many (post frame, creative frame) pairs, however many frames
_KEEP = 4  # best creatives kept per post for the assignment


@dataclass(frozen=True)
class Likenesses:
    """The prints and embedding of many stills and videos, as matrices ready to compare."""

    prints: np.ndarray  # (frames, crops, words) uint64: every frame of each, one after another (a still: one)
    starts: np.ndarray  # (N,) int64: where each one's frames begin in prints
    embedding: np.ndarray  # (N, D) float32 unit rows; zeros where unknown
    known: np.ndarray  # (N,) bool: whether the row has embedding

    def __len__(self) -> int:
        return len(self.starts)

    def frames(self) -> np.ndarray:
        """How many frames each one has."""
        counts: np.ndarray = np.diff(self.starts, append=len(self.prints))
        return counts

    def stacked(self, rows: np.ndarray, frames: int) -> np.ndarray:
        """(rows, frames, crops, words): the prints of these rows, each of which has `frames` frames."""
        stacked: np.ndarray = self.prints[self.starts[rows][:, None] + np.arange(frames)]
        return stacked

    def rows(self, start: int, stop: int) -> Likenesses:
        """Those from `start` up to `stop`, with their frames."""
        first = int(self.starts[start])
        end = int(self.starts[stop]) if stop < len(self) else len(self.prints)
        return Likenesses(self.prints[first:end], self.starts[start:stop] - first, self.embedding[start:stop],
                          self.known[start:stop])


def likenesses_of(prints: Sequence[bytes], embedding: Sequence[bytes | None]) -> Likenesses:
    """Stack prints (one per still or video: every crop of each frame) and float16 embedding (None where unknown)."""
    n = len(prints)
    packed = np.frombuffer(b"".join(prints), dtype=np.uint64).reshape(-1, len(CROPS), _WORDS)
    starts = np.zeros(n, np.int64)
    np.cumsum([len(p) // _FRAME_BYTES for p in prints[:-1]], out=starts[1:])
    known = np.array([f is not None for f in embedding], dtype=bool)
    dims = {len(f) // 2 for f in embedding if f is not None}
    if len(dims) != 1:  # none known, or embedding of different models: compare prints only
        return Likenesses(packed, starts, np.zeros((n, 1), np.float32), np.zeros(n, bool))
    (d,) = dims
    feats = np.zeros((n, d), np.float32)
    for i, f in enumerate(embedding):
        if f is not None:
            feats[i] = np.frombuffer(f, dtype=np.float16)
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    feats /= np.where(norms > 0, norms, 1)
    return Likenesses(packed, starts, feats, known)


def similarities(posts: Likenesses, creatives: Likenesses) -> np.ndarray:
    """(posts, creatives) similarity, 0-1: the frames' hash agreement, joined by feature cosine where known."""
    sim = np.empty((len(posts), len(creatives)), np.float32)
    p_frames, c_frames = posts.frames(), creatives.frames()
    for fp in np.unique(p_frames):  # a block per (post frames, creative frames): one for an account of stills
        rows = np.flatnonzero(p_frames == fp)
        ours = posts.stacked(rows, int(fp))[:, :, 0, :]  # a post as launched, against every crop of a creative
        for fc in np.unique(c_frames):
            cols = np.flatnonzero(c_frames == fc)
            sim[np.ix_(rows, cols)] = _agreement(ours, creatives.stacked(cols, int(fc)), aligned=fp == fc > 1)
    if posts.known.any() and creatives.known.any() and posts.embedding.shape[1] == creatives.embedding.shape[1]:
        joined = posts.embedding @ creatives.embedding.T  # cosine: the rows are unit vectors
        joined *= FEATURE_WEIGHT
        joined += (1 - FEATURE_WEIGHT) * sim
        np.copyto(sim, joined, where=posts.known[:, None] & creatives.known[None, :])
    return sim


def _agreement(ours: np.ndarray, theirs: np.ndarray, *, aligned: bool) -> np.ndarray:
    """(posts, creatives) hash agreement of posts of f frames (n, f, words) with creatives of g (m, g, crops, words):
    the mean over a post's frames of each one's agreement with its most alike frame of the creative, in order
    (frame i with i - 1, i and i + 1) where `aligned`, else among all of them."""
    (n, f, _), (m, g) = ours.shape, theirs.shape[:2]
    if aligned:
        total = np.zeros((n, m), np.float32)
        for i in range(f):
            total += np.maximum.reduce([_frame_agreement(ours[:, i], theirs[:, j])
                                        for j in range(max(0, i - 1), min(g, i + 2))])
        total /= f
        return total
    every = _frame_agreement(ours.reshape(n * f, -1), theirs.reshape(m * g, *theirs.shape[2:]))
    best = every.reshape(n * f, m, g).max(axis=2) if g > 1 else every
    mean: np.ndarray = best.reshape(n, f, m).mean(axis=1) if f > 1 else best
    return mean


def _frame_agreement(ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """(n, m) hash agreement, 0-1, of n prints (n, words) each with the closest crop of m (m, crops, words)."""
    # one contiguous row per (crop, word): the XOR and popcount then stream through memory
    theirs = np.ascontiguousarray(theirs.transpose(1, 2, 0))
    ours = np.ascontiguousarray(ours.T)
    shape = (ours.shape[1], theirs.shape[2])
    dist, d = np.full(shape, BITS_PER_PRINT, np.uint16), np.empty(shape, np.uint16)
    xor, count = np.empty(shape, np.uint64), np.empty(shape, np.uint8)
    for v in range(len(CROPS)):
        d.fill(0)
        for w in range(_WORDS):
            np.bitwise_xor(ours[w][:, None], theirs[v, w][None, :], out=xor)
            d += np.bitwise_count(xor, out=count)
        np.minimum(dist, d, out=dist)
    del xor, count, d
    sim = dist.astype(np.float32)
    sim *= -1 / BITS_PER_PRINT
    sim += 1
    return sim


def match(posts: Likenesses, creatives: Likenesses, threshold: float) -> list[tuple[int, int, float]]:
    """(post, creative, similarity) for each pair at or above the threshold, each side used at most once.

    The most similar pairs are taken first, so of near-identical variants the closest wins and the
    others stay unposted.
    """
    if not len(posts) or not len(creatives):
        return []
    keep = min(_KEEP, len(creatives))
    found: list[tuple[float, int, int]] = []
    for start, stop in _chunks(posts, max(1, min(_CHUNK, _CELLS // len(creatives.prints)))):
        sim = similarities(posts.rows(start, stop), creatives)
        best = np.argpartition(-sim, keep - 1, axis=1)[:, :keep]
        values = np.take_along_axis(sim, best, axis=1)
        rows, cols = np.nonzero(values >= threshold)
        found += [(float(values[r, c]), start + int(r), int(best[r, c])) for r, c in zip(rows, cols, strict=True)]
    pairs: list[tuple[int, int, float]] = []
    used_posts: set[int] = set()
    used_creatives: set[int] = set()
    for value, p, c in sorted(found, key=lambda t: (-t[0], t[1], t[2])):
        if p not in used_posts and c not in used_creatives:
            used_posts.add(p)
            used_creatives.add(c)
            pairs.append((p, c, value))
    return pairs


def _chunks(posts: Likenesses, frames: int) -> list[tuple[int, int]]:
    """(start, stop) of consecutive posts holding at most `frames` frames together, or one post where it has more."""
    ends = posts.starts + posts.frames()
    spans, start = [], 0
    while start < len(posts):
        stop = max(start + 1, int(np.searchsorted(ends, posts.starts[start] + frames, side="right")))
        spans.append((start, stop))
        start = stop
    return spans
