"""Decode functions that misbehave on purpose, run inside the real decoding worker processes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np

from scorer.decoding.decode import Decoded, ItemGeometry, decode_file
from scorer.decoding.vet import ImageLimits
from scorer.decoding.video import decode_video
from scorer.decoding.video_probe import VideoLimits


def poison_decode(path: Path, geometry: ItemGeometry | None, limits: ImageLimits, thumb_px: int) -> Decoded:
    """Like decode_file, but a name containing 'hang' never returns, 'slow' takes a second, 'crash' kills the
    worker and 'hog' asks for 2 GiB of address space (untouched: without a limit the kernel grants it)."""
    if "slow" in path.name:
        time.sleep(1.0)
    if "hang" in path.name:
        time.sleep(3600)
    if "crash" in path.name:
        os.abort()
    if "hog" in path.name:
        _hog()
    return decode_file(path, geometry, limits, thumb_px)


def poison_video_decode(path: Path, geometry: ItemGeometry | None, limits: VideoLimits, thumb_px: int) -> Decoded:
    """Like decode_video, but 'crash' segfaults the worker (as FFmpeg would), 'hang' never returns and 'hog'
    asks for 2 GiB, as poison_decode does."""
    if "crash" in path.name:
        os.kill(os.getpid(), signal.SIGSEGV)
    if "hang" in path.name:
        time.sleep(3600)
    if "hog" in path.name:
        _hog()
    return decode_video(path, geometry, limits, thumb_px)


def _hog() -> None:
    hog = np.empty(2**31, np.uint8)  # MemoryError under a limit of less
    del hog
