"""Decode functions that misbehave on purpose, run inside the real decoding worker processes."""

from __future__ import annotations

import os
import time
from pathlib import Path

from scorer.decoding.decode import Decoded, ItemGeometry, decode_file
from scorer.decoding.vet import ImageLimits


def poison_decode(path: Path, geometry: ItemGeometry | None, limits: ImageLimits, thumb_px: int) -> Decoded:
    """Like decode_file, but a name containing 'hang' never returns and one containing 'crash' kills the worker."""
    if "hang" in path.name:
        time.sleep(3600)
    if "crash" in path.name:
        os.abort()
    return decode_file(path, geometry, limits, thumb_px)
