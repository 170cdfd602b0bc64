"""Bulk's decoding tasks, called as Ray calls them: a file they cannot take is rejected with the reason that the
decoding workers of `scorer score` give for it (scorer.decoding.reasons), and a video is known by its content and
decoded into the frames `scorer score` scores, in a decoding worker process of the task's own."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from scorer.bulk.stages import IMAGE, REJECTED, SCORED, VIDEO, DecodeStage
from scorer.decoding import reasons
from scorer.decoding.decode import Decoded, ItemGeometry
from scorer.decoding.pool import DecodeJob, DecodePool
from scorer.decoding.vet import ImageLimits
from scorer.decoding.video import DecodedVideo, decode_video
from scorer.decoding.video_probe import VideoLimits
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.poison import poison_video_decode
from tests.support.videogen import photo_jpeg, reel

GEOMETRY = ItemGeometry("squish", (16, 16))
HOOK_RED = [(3.0, CLASS_COLOURS["High"]), (3.0, CLASS_COLOURS["Low"])]


def _bug(*args: object) -> Decoded:
    raise KeyError("a decoder bug")


def _hungry(*args: object) -> Decoded:
    raise MemoryError


def _decide(stage: DecodeStage, paths: list[Path]) -> dict[str, np.ndarray]:
    return stage({"path": np.array([str(p) for p in paths], dtype=object)})


@pytest.mark.parametrize(("decode", "reason"), [(_bug, reasons.undecodable(KeyError("a decoder bug"))),
                                                (_hungry, reasons.out_of_memory())], ids=["bug", "memory"])
def test_a_file_the_decoder_cannot_take_is_rejected_with_the_reason_scorer_score_gives(
        tmp_path: Path, decode: Callable[..., Decoded], reason: str) -> None:
    path = write_creative(tmp_path / "a.png", CLASS_COLOURS["High"])
    with DecodePool(DecodeJob(GEOMETRY, ImageLimits(), 0, decode), workers=1, timeout=20) as pool:
        ((_, error),) = pool.imap([path])
    decided = _decide(DecodeStage(GEOMETRY, ImageLimits(), decode=decode), [path])
    assert (decided["status"][0], decided["reason"][0]) == (REJECTED, str(error)) == (REJECTED, reason)


@pytest.mark.parametrize(("name", "reason"), [("crash.mp4", reasons.crashes(video=True)),
                                              ("hang.mp4", reasons.video_hangs(2.0)),
                                              ("hog.mp4", reasons.out_of_memory(256))])
def test_a_video_that_crashes_hangs_or_floods_ffmpeg_costs_its_row_as_in_scorer_score(
        tmp_path: Path, name: str, reason: str) -> None:
    """FFmpeg is C: a crash (SIGSEGV), a hang or a flood of memory ends the decoding worker, never the Ray task."""
    video = VideoLimits(timeout=2.0, max_memory_mb=256)
    paths = [reel(tmp_path / name, HOOK_RED), reel(tmp_path / "after.mp4", HOOK_RED)]
    job = DecodeJob(GEOMETRY, ImageLimits(), 0, video=video, decode_video=poison_video_decode)
    with DecodePool(job, workers=1, timeout=20) as pool:
        (_, error), _ = pool.imap(paths)
    decided = _decide(DecodeStage(GEOMETRY, ImageLimits(), video, decode_video=poison_video_decode), paths)
    assert [(s, r) for s, r in zip(decided["status"], decided["reason"], strict=True)] == [
        (REJECTED, str(error)), (SCORED, "")]
    assert str(error) == reason
    assert decided["sha256"][0], "its content was read and hashed: the row says which file it was"


def test_a_video_is_known_by_its_content_and_gives_the_frames_scorer_score_scores(tmp_path: Path) -> None:
    limits = VideoLimits()
    video = tmp_path / "reel.jpg"  # an MP4, whatever its name
    video.write_bytes(reel(tmp_path / "reel.mp4", HOOK_RED).read_bytes())
    (tmp_path / "photo.mp4").write_bytes(photo_jpeg())  # a JPEG, whatever its name
    decided = _decide(DecodeStage(GEOMETRY, ImageLimits(), limits), [video, tmp_path / "photo.mp4"])

    expected = decode_video(video, GEOMETRY, limits, 0)
    assert isinstance(expected, DecodedVideo) and expected.pixels is not None
    assert list(decided["status"]) == [SCORED, SCORED]
    assert list(decided["media"]) == [VIDEO, IMAGE] and list(decided["format"]) == ["MP4", "JPEG"]
    assert np.array_equal(decided["pixels"][0], expected.pixels)
    assert list(decided["times"][0]) == list(expected.times) and list(decided["in_hook"][0]) == list(expected.in_hook)
    assert (decided["frames"][0], decided["duration"][0]) == (len(expected.times), expected.duration)
    assert (decided["width"][0], decided["height"][0]) == (expected.width, expected.height) == (64, 112)
    assert decided["notes"][0] == "; ".join(expected.notes)
    assert decided["modified"][0] == video.stat().st_mtime, "the input's own time, not its copy's"
    assert decided["pixels"][1].shape == (1, 16, 16, 3) and decided["frames"][1] == 0
