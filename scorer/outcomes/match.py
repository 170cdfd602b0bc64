"""Which launched post is which scored creative: perceptual hashes and embedding, one to one.

Every post is compared with every creative as matrices, a chunk of posts at a time, so 10,000 posts
against 30,000 creatives stay within seconds and a bounded amount of memory.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from scorer.decoding.prints import BITS_PER_PRINT, BYTES_PER_PRINT, CROPS

_WORDS = BYTES_PER_PRINT // 8
# How much the embedding weigh against the hashes where both sides have them: the hashes carry the
# match (they see the whole picture, the embedding only the model's crop of it), the embedding break
# ties between near-identical variants and keep likeness-alike pictures from passing on the hashes alone.
FEATURE_WEIGHT = 0.3
_CHUNK = 256  # posts compared at once: about 256 × creatives × 8 bytes in flight
_KEEP = 4  # best creatives kept per post for the assignment


@dataclass(frozen=True)
class Likenesses:
    """The prints and embedding of many images, as matrices ready to compare."""

    prints: np.ndarray  # (N, views, words) uint64
    embedding: np.ndarray  # (N, D) float32 unit rows; zeros where unknown
    known: np.ndarray  # (N,) bool: whether the row has embedding

    def __len__(self) -> int:
        return len(self.prints)


def likenesses_of(prints: Sequence[bytes], embedding: Sequence[bytes | None]) -> Likenesses:
    """Stack prints (one per image, every view) and float16 embedding (None where unknown) into Likenesses."""
    n = len(prints)
    packed = np.frombuffer(b"".join(prints), dtype=np.uint64).reshape(n, len(CROPS), _WORDS)
    known = np.array([f is not None for f in embedding], dtype=bool)
    dims = {len(f) // 2 for f in embedding if f is not None}
    if len(dims) != 1:  # none known, or embedding of different models: compare prints only
        return Likenesses(packed, np.zeros((n, 1), np.float32), np.zeros(n, bool))
    (d,) = dims
    feats = np.zeros((n, d), np.float32)
    for i, f in enumerate(embedding):
        if f is not None:
            feats[i] = np.frombuffer(f, dtype=np.float16)
    norms = np.linalg.norm(feats, axis=1, keepdims=True)
    feats /= np.where(norms > 0, norms, 1)
    return Likenesses(packed, feats, known)


def similarities(posts: Likenesses, creatives: Likenesses) -> np.ndarray:
    """(posts, creatives) similarity, 0-1: the closest view's hash agreement, joined by feature cosine where known."""
    # one contiguous row per (view, word): the XOR and popcount then stream through memory
    theirs = np.ascontiguousarray(creatives.prints.transpose(1, 2, 0))
    ours = np.ascontiguousarray(posts.prints[:, 0, :].T)  # a post as launched, against each view of each creative
    shape = (len(posts), len(creatives))
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
    if posts.known.any() and creatives.known.any() and posts.embedding.shape[1] == creatives.embedding.shape[1]:
        joined = posts.embedding @ creatives.embedding.T  # cosine: the rows are unit vectors
        joined *= FEATURE_WEIGHT
        joined += (1 - FEATURE_WEIGHT) * sim
        np.copyto(sim, joined, where=posts.known[:, None] & creatives.known[None, :])
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
    for start in range(0, len(posts), _CHUNK):
        chunk = Likenesses(*(a[start:start + _CHUNK] for a in (posts.prints, posts.embedding, posts.known)))
        sim = similarities(chunk, creatives)
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
