"""Video posts as training images: their frames as scoring samples them, kept in their post's split, and held-out
video posts judged on their frames combined as scoring combines them; a cover where the frames are not to be had."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from scorer.decoding.decode import decode_file
from scorer.decoding.vet import ImageLimits
from scorer.decoding.video import decode_video, video_probabilities
from scorer.decoding.video_probe import VideoLimits
from scorer.settings import Settings, TrainSettings, VideoSettings
from scorer.training.frames import fit_rows, per_post, training_geometry
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.videogen import Reel, encode

SETTINGS = dataclasses.replace(Settings(), train=TrainSettings(image_size=32),
                               video=VideoSettings(frames=4, hook_seconds=1, hook_weight=0.7))
RED, BLUE = CLASS_COLOURS["High"], CLASS_COLOURS["Low"]


def _clip(path: Path, *, broken_after_cover: bool = False) -> Path:
    data = encode(Reel(((1.0, RED), (1.0, BLUE)), size=(64, 48), fps=4, faststart=True), "mp4")
    # The index first, then the frames cut short: the cover decodes (as import vets it), the later frames do not.
    path.write_bytes(data[: int(len(data) * 0.75)] if broken_after_cover else data)
    return path


@pytest.fixture
def posts(tmp_path: Path) -> pd.DataFrame:
    """An image, a video with its cover, a cover alone, a video alone, and a video whose later frames are broken."""
    cover = write_creative(tmp_path / "cover.jpg", RED, (64, 48))
    rows = [
        ("an image", write_creative(tmp_path / "still.jpg", BLUE, (64, 48)), None, "image", False),
        ("a video", cover, _clip(tmp_path / "a.mp4"), "video", True),
        ("a cover alone", cover, None, "video", False),
        ("a video alone", _clip(tmp_path / "b.mp4"), tmp_path / "b.mp4", "video", False),
        ("broken frames", cover, _clip(tmp_path / "c.mp4", broken_after_cover=True), "video", True),
        ("broken, no cover", _clip(tmp_path / "d.mp4", broken_after_cover=True), tmp_path / "d.mp4", "video", True),
    ]
    return pd.DataFrame({"source": [r[0] for r in rows], "image": [str(r[1]) for r in rows],
                         "video": [str(r[2]) if r[2] else "" for r in rows], "format": [r[3] for r in rows],
                         "label": ["Low", "High", "High", "Low", "High", "Low"], "is_valid": [r[4] for r in rows]})


def test_a_video_post_trains_on_the_frames_scoring_samples_all_in_its_split(posts: pd.DataFrame) -> None:
    with fit_rows(posts, SETTINGS) as rows:
        table = rows.table
        assert rows.trained_on == ("picture", "frames", "cover", "frames", "cover", "cover")
        assert rows.frame_count == 8
        assert list(table["post"]) == [0, 1, 1, 1, 1, 2, 3, 3, 3, 3, 4, 5]
        for post, part in table.groupby("post"):
            assert (part["is_valid"] == posts["is_valid"][post]).all(), "a post's frames stay in its split"
            assert (part["label"] == posts["label"][post]).all()
        scored = decode_video(Path(posts["video"][1]), training_geometry(SETTINGS.train),
                              VideoLimits.from_settings(SETTINGS.video), 0)
        frames = table[table["post"] == 1]
        assert list(frames["in_hook"]) == list(scored.in_hook) == [True, True, False, False]
        for path, pixels in zip(frames["image"], scored.pixels, strict=True):  # type: ignore[arg-type]
            assert np.array_equal(np.asarray(Image.open(path)), pixels), "the very pixels scoring gives the model"
        assert list(table["image"][table["post"].isin([0, 2, 4])]) == [posts["image"][0], posts["image"][2],
                                                                       posts["image"][4]], "the picture, the cover"
        # No cover file: the video's first frame stands for its cover.
        (first,) = table["image"][table["post"] == 5]
        cover = decode_video(Path(posts["video"][5]), training_geometry(SETTINGS.train),
                             dataclasses.replace(VideoLimits.from_settings(SETTINGS.video), frames=1), 0)
        assert cover.pixels is not None and np.array_equal(np.asarray(Image.open(first)), cover.pixels[0])
        folder = Path(frames["image"].iloc[0]).parent
    assert not folder.exists(), "the frames last the fit only"
    assert set(rows.why_cover) == {4, 5} and rows.why_cover[4].startswith("video is incomplete or corrupt")


def test_held_out_video_posts_are_judged_on_their_frames_combined(posts: pd.DataFrame) -> None:
    with fit_rows(posts, SETTINGS) as rows:
        valid_rows = np.flatnonzero(rows.table["is_valid"].to_numpy())
    probs = np.random.default_rng(0).dirichlet([1, 1], len(valid_rows)).astype(np.float32)
    order, combined = per_post(rows, valid_rows, probs, SETTINGS.video.hook_weight)
    assert list(order) == [1, 4, 5]
    frames = probs[:4]
    assert np.allclose(combined[0], video_probabilities(frames, (True, True, False, False), 0.7), atol=1e-6)
    assert not np.allclose(combined[0], frames.mean(axis=0), atol=1e-3), "the hook weighs more"
    assert np.array_equal(combined[1:], probs[4:]), "a post of one picture keeps its own probabilities"


def test_posts_without_videos_train_as_before(posts: pd.DataFrame) -> None:
    stills = posts[posts["video"] == ""].reset_index(drop=True)
    with fit_rows(stills, SETTINGS) as rows:
        assert list(rows.table["image"]) == list(stills["image"]) and not rows.has_frames
    probs = np.array([[0.2, 0.8]], dtype=np.float32)
    order, same = per_post(rows, np.array([1]), probs, 0.6)
    assert list(order) == [1] and same is probs


def test_the_training_geometry_is_what_scoring_reproduces_of_fastais_resize(tmp_path: Path) -> None:
    picture = write_creative(tmp_path / "wide.jpg", RED, (90, 40))
    ours = decode_file(picture, training_geometry(TrainSettings(image_size=32)), ImageLimits(), 0).pixels
    from fastai.vision.all import PILImage, Resize

    theirs = np.asarray(Resize(32)(PILImage.create(picture), split_idx=1))
    assert ours is not None and np.array_equal(ours, theirs)
