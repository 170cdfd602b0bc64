"""Perceptual fingerprints: hashes of a creative that survive what Instagram does to an upload.

The hash is imagehash's perceptual hash (the low frequencies of a 2-D DCT against their median),
computed with a numpy DCT: imagehash's own goes through SciPy, which would add about 28 MB to every
decoding worker, where this runs. tests/test_outcomes.py checks the two agree bit for bit.

A creative keeps one print per crop: as stored, and centre-cropped to each shape Instagram crops to
(4:5, 1:1, 1.91:1); a post is hashed as it is. The post's print is then close to the crop it was cut
from, whatever the re-encoding, resizing, EXIF strip or a mild filter did.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image

# Width / height of the crops a creative is hashed in; None is the image as stored.
CROPS: tuple[float | None, ...] = (None, 4 / 5, 1.0, 1.91)
HASH_SIZE = 16
_IMAGE_SIZE = 4 * HASH_SIZE  # imagehash's highfreq_factor of 4
BITS_PER_PRINT = HASH_SIZE * HASH_SIZE
BYTES_PER_PRINT = BITS_PER_PRINT // 8
# The first HASH_SIZE rows of SciPy's unnormalised DCT-II matrix: y[k] = 2 Σ x[n] cos(πk(2n+1) / 2N).
_n = np.arange(_IMAGE_SIZE)
_DCT = 2 * np.cos(np.pi * np.arange(HASH_SIZE)[:, None] * (2 * _n[None, :] + 1) / (2 * _IMAGE_SIZE))


def crop_box(size: tuple[int, int], aspect: float | None) -> tuple[int, int, int, int]:
    """The largest centred box (left, top, right, bottom) of an image of `size` with this width / height (the whole
    image for None)."""
    w, h = size
    if aspect is None:
        return 0, 0, w, h
    if w / h > aspect:
        cw, ch = max(1, round(h * aspect)), h
    else:
        cw, ch = w, max(1, round(w / aspect))
    left, top = (w - cw) // 2, (h - ch) // 2
    return left, top, left + cw, top + ch


def phash_bits(im: Image.Image) -> np.ndarray:
    """imagehash.phash(im, HASH_SIZE) as a flat boolean array."""
    return _bits(im.convert("L").resize((_IMAGE_SIZE, _IMAGE_SIZE), Image.Resampling.LANCZOS))


def _bits(small: Image.Image) -> np.ndarray:
    low = _DCT @ np.asarray(small, dtype=np.float64) @ _DCT.T
    return np.asarray(low > np.median(low), dtype=bool).ravel()


def creative_prints(im: Image.Image) -> bytes:
    """A creative's prints, one per crop in CROPS, packed and concatenated."""
    return b"".join(np.packbits(_bits(small)).tobytes() for small in _shrunk_crops(im.convert("L")))


def _shrunk_crops(grey: Image.Image) -> Iterator[Image.Image]:
    """Each crop of the grey image in CROPS, shrunk as phash_bits shrinks it, to the very same pixels.

    Pillow's LANCZOS resizes across, then down. The pass across costs most on a large picture, and
    crops that keep the same columns (every crop of a portrait frame) share it: it is made once for
    them, then each crop's rows are shrunk down. A video's sampled frames are hashed this way 16 at a time.
    """
    across: dict[tuple[int, int], Image.Image] = {}
    height = grey.height
    for aspect in CROPS:
        left, top, right, bottom = crop_box(grey.size, aspect)
        if (left, right) not in across:
            columns = grey.crop((left, 0, right, height))
            across[(left, right)] = columns.resize((_IMAGE_SIZE, height), Image.Resampling.LANCZOS)
        rows = across[(left, right)].crop((0, top, _IMAGE_SIZE, bottom))
        yield rows.resize((_IMAGE_SIZE, _IMAGE_SIZE), Image.Resampling.LANCZOS)
