"""Video posts as training images: their sampled frames, and held-out predictions combined as scoring combines them.

A video post whose video was downloaded trains on the frames decode_video samples from it, the same
cover, hook and rest that scoring samples, at the training size and through the Resize that scoring
reproduces, written losslessly (PNG) so that fastai reads exactly those pixels. Every frame of a post
takes its post's split, so a held-out post is never seen in training. A held-out video post is judged
as scoring would judge it: its frames' probabilities combined by video_probabilities. A video post
with only its cover (Instaloader's --no-videos), or whose frames cannot all be decoded, trains on its
cover, and the card says so.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from scorer.decoding.decode import ItemGeometry
from scorer.decoding.video import decode_video, video_probabilities
from scorer.decoding.video_probe import VideoLimits
from scorer.errors import DataError, ImageError
from scorer.settings import Settings, TrainSettings

log = logging.getLogger(__name__)

FRAMES, COVER, PICTURE = "frames", "cover", "picture"  # what a post trained on


@dataclass(frozen=True)
class FitRows:
    """The images fastai trains on, one row each (image, label, is_valid, post, in_hook), and what each post gave.

    `post` is the post's position in the prepared table; `trained_on` gives, for each position, frames,
    cover (a video post's cover alone) or picture (an image, a carousel's first picture).
    """

    table: pd.DataFrame
    trained_on: tuple[str, ...]
    why_cover: dict[int, str]  # a video post that trained on its cover although its video was there: why

    @property
    def frame_count(self) -> int:
        """The frames written, every post that trains on something else having one row."""
        return len(self.table) - (len(self.trained_on) - self.trained_on.count(FRAMES))

    @property
    def has_frames(self) -> bool:
        """Whether any post trains on frames, so that some post has more than one row."""
        return FRAMES in self.trained_on


def training_geometry(train: TrainSettings) -> ItemGeometry:
    """What fit.py's item transform, fastai's Resize(train.image_size), does to a picture, as scoring reproduces it."""
    return ItemGeometry("crop", (train.image_size, train.image_size))


@contextmanager
def fit_rows(table: pd.DataFrame, settings: Settings) -> Iterator[FitRows]:
    """The training images of the prepared posts, frames written to a temporary folder that lasts the block."""
    on = [COVER if fmt == "video" else PICTURE for fmt in table["format"]]
    if not (table["video"] != "").any():  # nothing to decode: every post is its picture, as before videos
        yield FitRows(_rows(table, range(len(table)), list(table["image"]), [True] * len(table)), tuple(on), {})
        return
    with tempfile.TemporaryDirectory(prefix="scorer-frames-") as folder:
        yield _expand(table, settings, Path(folder), on)


def _expand(table: pd.DataFrame, settings: Settings, folder: Path, on: list[str]) -> FitRows:
    geometry, limits = training_geometry(settings.train), VideoLimits.from_settings(settings.video)
    posts: list[int] = []
    images: list[str] = []
    hooks: list[bool] = []
    why: dict[int, str] = {}
    for i, post in enumerate(table.itertuples()):
        frames: list[tuple[np.ndarray, bool]] = []
        if post.video:
            try:
                decoded = decode_video(Path(post.video), geometry, limits, 0)
                assert decoded.pixels is not None
                frames = list(zip(decoded.pixels, decoded.in_hook, strict=True))
                on[i] = FRAMES
            except ImageError as exc:  # vetted at import by its cover only: a later frame may still be broken
                why[i] = str(exc)
                log.warning("%s trains on its cover: its video's frames cannot be decoded (%s)", post.source, exc)
                frames = [] if post.image != post.video else _first_frame(post.source, Path(post.video), geometry,
                                                                          limits)
        for n, (pixels, in_hook) in enumerate(frames):
            path = folder / f"{i}-{n}.png"
            Image.fromarray(pixels).save(path, "PNG", compress_level=1)  # lossless: fastai reads these very pixels
            posts.append(i)
            images.append(str(path))
            hooks.append(bool(in_hook))
        if not frames:
            posts.append(i)
            images.append(str(post.image))
            hooks.append(True)
    return FitRows(_rows(table, posts, images, hooks), tuple(on), why)


def _first_frame(source: str, video: Path, geometry: ItemGeometry,
                 limits: VideoLimits) -> list[tuple[np.ndarray, bool]]:
    """A video without a cover file stands for its cover by its first frame, which import already decoded."""
    try:
        decoded = decode_video(video, geometry, dataclasses.replace(limits, frames=1), 0)
    except ImageError as exc:
        raise DataError(f"{source}: video {video.name} changed since it was imported ({exc}): train again") from None
    assert decoded.pixels is not None
    return [(decoded.pixels[0], True)]


def _rows(table: pd.DataFrame, posts: Sequence[int], images: Sequence[str], hooks: Sequence[bool]) -> pd.DataFrame:
    at = np.asarray(posts, dtype=int)
    return pd.DataFrame({"image": list(images), "label": table["label"].to_numpy()[at],
                         "is_valid": table["is_valid"].to_numpy()[at], "post": at, "in_hook": list(hooks)})


def per_post(rows: FitRows, valid_rows: np.ndarray, probs: np.ndarray,
             hook_weight: float) -> tuple[np.ndarray, np.ndarray]:
    """The held-out posts (positions in the prepared table, in the order fastai gave their first rows) and their
    probabilities: a video post's frames combined by video_probabilities, as scoring combines them."""
    posts = rows.table["post"].to_numpy()[valid_rows]
    if not rows.has_frames:
        return posts, probs
    hooks = rows.table["in_hook"].to_numpy(dtype=bool)[valid_rows]
    order = np.array(list(dict.fromkeys(posts.tolist())), dtype=int)
    combined = [video_probabilities(probs[posts == p], hooks[posts == p], hook_weight) for p in order]
    return order, np.stack(combined).astype(np.float32)
