"""The fake classifier: scores by colour, with real decoding workers, for tests whose subject is not the model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scorer.checks.decode_check import DecodeCheck
from scorer.decoding.decode import ItemGeometry, decode_file
from scorer.decoding.pool import DecodeJob, DecodePool
from scorer.decoding.vet import ImageLimits
from scorer.results import ModelInfo
from scorer.scoring.engine import Engine

CLASSES = ("Low", "Neutral", "High")


class Crash(BaseException):
    """Stands in for kill -9: nothing after it runs, no `except Exception` catches it."""


#: what the report's Model sheet says of the fake colour model
COLOUR_INFO = ModelInfo(Path("/models/colour.pkl"), "cd" * 32, CLASSES, "cpu", "fake", "squish to 16×16", {})


class ColourModel:
    """Red is High, green Neutral, blue Low; a pure-magenta image crashes the 'service' when asked to.

    A classifier as the engine knows them (scorer.scoring.engine.Predictor): probabilities and, with `embeds`,
    the embedding (each creative's mean colour) from one call.
    """

    classes = CLASSES
    geometry = ItemGeometry("squish", (16, 16))
    batch_size = 8
    poison_crashes = False
    embeds = False

    def __init__(self) -> None:
        self.batches: list[int] = []  # the size of each batch the engine asked for, in order

    def predict_with_embedding(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        self.batches.append(len(pixels))
        means = pixels.reshape(len(pixels), -1, 3).mean(axis=1)
        if self.poison_crashes and any(m[0] > 200 and m[2] > 200 and m[1] < 60 for m in means):
            raise Crash("the poison file took the service down")
        logits = means[:, [2, 1, 0]] / 20.0
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True), means / 255.0 if self.embeds else None

    def predict_files(self, files: list[Path]) -> np.ndarray:
        raise AssertionError("not used: geometry is set")


def colour_engine(model: ColourModel | None = None, info: ModelInfo = COLOUR_INFO, *,
                  check: DecodeCheck | None = None) -> Engine:
    """The fake colour model with one real decoding worker; close it after use."""
    pool = DecodePool(DecodeJob(ColourModel.geometry, ImageLimits(), 24, decode_file), workers=1, timeout=20)
    return Engine(model or ColourModel(), pool, info, check=check)
