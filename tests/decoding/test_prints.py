"""The prints: one perceptual hash per crop, exactly imagehash's phash of that crop, however they are computed."""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
from PIL import Image

from scorer.decoding.prints import BYTES_PER_PRINT, CROPS, creative_prints, crop_box


def _picture(size: tuple[int, int], seed: int) -> Image.Image:
    """Noise over a gradient and a bright block: detail in every crop, and crops that hash differently."""
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = np.linspace(0, 200, w)[None, :, None] + np.linspace(0, 50, h)[:, None, None] + rng.normal(0, 20, (h, w, 3))
    pixels[h // 5 : h // 3, w // 4 : w // 2] += 60
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


@pytest.mark.parametrize("size", [(1080, 1920), (1920, 1080), (1080, 1350), (1080, 1080), (333, 517), (97, 31),
                                  (64, 112), (40, 40)])
def test_each_print_is_imagehash_phash_of_its_crop(size: tuple[int, int]) -> None:
    for seed in range(3):
        im = _picture(size, seed)
        prints = creative_prints(im)
        assert len(prints) == len(CROPS) * BYTES_PER_PRINT
        for k, aspect in enumerate(CROPS):
            expected = np.packbits(imagehash.phash(im.crop(crop_box(im.size, aspect)), 16).hash.ravel()).tobytes()
            assert prints[k * BYTES_PER_PRINT : (k + 1) * BYTES_PER_PRINT] == expected, (size, seed, aspect)


def test_the_crops_are_centred_and_as_large_as_their_shape_allows() -> None:
    assert crop_box((1080, 1920), None) == (0, 0, 1080, 1920)
    assert crop_box((1080, 1920), 4 / 5) == (0, 285, 1080, 1635)
    assert crop_box((1920, 1080), 1.0) == (420, 0, 1500, 1080)
    assert crop_box((1080, 1080), 1.91) == (0, 257, 1080, 822)
