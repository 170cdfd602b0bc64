"""Calibration images: photo-like JPEGs and extreme model-sized images, made from a seed, for the per-model checks.

The decode check decodes them both ways; the precision check calibrates int8 ranges on them and compares.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image, ImageChops, ImageDraw

from scorer.decoding.decode import ItemGeometry, decode_bytes
from scorer.decoding.vet import ImageLimits

CALIBRATION_LIMITS = ImageLimits(max_pixels=200_000_000, max_decode_bytes=2**31)


def calibration_jpeg(size: tuple[int, int], detail: tuple[int, int], seed: int) -> bytes:
    """A photo-like JPEG: colour fields with texture at about the model's pixel scale, shapes and sensor noise."""
    rng = np.random.default_rng(seed)
    w, h = size

    def field_at(grid: tuple[int, int], sigma: float) -> Image.Image:
        values = rng.normal(128, sigma, (grid[1], grid[0], 3)).clip(0, 255).astype(np.uint8)
        return Image.fromarray(values, "RGB").resize(size, Image.Resampling.BICUBIC)

    # Layers are added one at a time, so a 20-megapixel image never has more than three copies alive.
    im = ImageChops.add(field_at((6, 6), 50), field_at(detail, 20), offset=-128)
    draw = ImageDraw.Draw(im)
    for _ in range(6):
        x, y, r = int(rng.integers(0, w)), int(rng.integers(0, h)), int(rng.uniform(0.05, 0.2) * min(w, h))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    tile = Image.fromarray(rng.normal(128, 8, (256, 256, 3)).clip(0, 255).astype(np.uint8), "RGB")
    noise = Image.new("RGB", size)
    for x in range(0, w, 256):
        for y in range(0, h, 256):
            noise.paste(tile, (x, y))
    im = ImageChops.add(im, noise, offset=-128)
    del noise
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90)
    return out.getvalue()


def calibration_sizes(geometry: ItemGeometry, scale: int) -> list[tuple[int, int]]:
    """A landscape and a portrait size at which drafting to geometry.draft_size picks `scale`."""
    dw, dh = geometry.draft_size
    return [(int(scale * dw * 1.25), int(scale * dh * 1.05)), (int(scale * dw * 1.05), int(scale * dh * 1.3))]


def calibration_pixels(geometry: ItemGeometry, count: int, seed: int) -> np.ndarray:
    """`count` photo-like calibration images of varied sizes and detail, decoded at full size into model input."""
    exact = dataclasses.replace(geometry, max_scale=1, probe=False)
    (w, h), (tw, th) = geometry.draft_size, geometry.size
    pixels = []
    for k in range(count):
        size = (int(w * (1.1 + 0.3 * (k % 3))), int(h * (1.05 + 0.4 * (k % 2))))
        detail = (max(2, int(tw * (0.15 + 0.1 * (k % 4)))), max(2, int(th * (0.15 + 0.1 * (k % 4)))))
        decoded = decode_bytes(calibration_jpeg(size, detail, seed + k), 0.0, exact, CALIBRATION_LIMITS, 0)
        assert decoded.pixels is not None
        pixels.append(decoded.pixels)
    return np.stack(pixels)


def extreme_pixels(geometry: ItemGeometry, seed: int) -> np.ndarray:
    """Model-sized images at the edges of what creatives hold: black, white, pure primaries, hard-edged
    saturated blocks and single-pixel checks; so that activation ranges set on them cover real creatives."""
    w, h = geometry.size
    rng = np.random.default_rng(seed)
    flat = [np.full((h, w, 3), colour, np.uint8) for colour in
            ((0, 0, 0), (255, 255, 255), (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0))]
    checks = ((np.indices((h, w)).sum(axis=0) % 2) * 255).astype(np.uint8)
    blocks = rng.choice(np.array([0, 255], np.uint8), (h // 8 + 1, w // 8 + 1, 3))
    blocks = blocks.repeat(8, axis=0).repeat(8, axis=1)[:h, :w]
    ramp = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.array([1.0, 0.5, 0.0], np.float32)
    ramp = np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8)
    return np.stack([*flat, np.repeat(checks[..., None], 3, axis=2), blocks, ramp])
