"""Generated creatives for the tests: flat colours with texture, so a tiny learner can tell them apart."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# One colour per engagement class, lowest first: the tiny learner learns colour -> class.
CLASS_COLOURS = {"Low": (40, 60, 200), "Neutral": (40, 180, 60), "High": (220, 50, 40)}


def creative(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """An RGB image of the given colour with noise and a lighter square, like a simple banner."""
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = np.empty((h, w, 3), np.int16)
    pixels[:] = colour
    pixels += rng.integers(-30, 30, (h, w, 3), dtype=np.int16)
    x, y = rng.integers(0, max(w // 2, 1)), rng.integers(0, max(h // 2, 1))
    pixels[y : y + h // 3, x : x + w // 3] += 40
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def write_creative(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (64, 48), seed: int = 0,
                   fmt: str | None = None) -> Path:
    """Save a generated creative; the format follows the suffix unless given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    creative(colour, size, seed).save(path, fmt)
    return path


def labelled_set(folder: Path, per_class: int, classes: dict[str, tuple[int, int, int]] | None = None,
                 size: tuple[int, int] = (64, 48)) -> list[tuple[Path, str]]:
    """per_class JPEGs for each class, named <class>_<n>.jpg; returns (path, label) pairs."""
    classes = classes or CLASS_COLOURS
    items = []
    for k, (label, colour) in enumerate(classes.items()):
        for n in range(per_class):
            seed = 1000 * k + n  # not hash(): str hashes change from one process to the next
            items.append((write_creative(folder / f"{label}_{n}.jpg", colour, size, seed), label))
    return items


def striped(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48), seed: int = 0) -> Image.Image:
    """Fine slanted stripes of a colour over a random one: detail that JPEG draft decoding renders differently."""
    rng = np.random.default_rng(seed)
    w, h = size
    period, other = int(rng.integers(3, 8)), rng.integers(0, 256, 3)
    phase = np.arange(w)[None, :] * rng.uniform(0.3, 1) + np.arange(h)[:, None] * rng.uniform(0, 1)
    mask = (phase % period < period / 2)[..., None]
    return Image.fromarray(np.where(mask, np.array(colour), other).astype(np.uint8), "RGB")
