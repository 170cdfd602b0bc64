"""Videos into the learner's input: sniffed by content, probed within limits, sampled forward, decoded as stills are."""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from scorer.config import load_settings
from scorer.decoding.decode import Decoded, ItemGeometry, decode_file
from scorer.decoding.pool import DecodeJob, DecodePool
from scorer.decoding.reasons import CORRUPT_VIDEO
from scorer.decoding.vet import ImageLimits
from scorer.decoding.video import DecodedVideo, decode_video, sample_times, video_probabilities
from scorer.decoding.video_probe import VideoLimits, sniff_video_file, video_format
from scorer.errors import ImageError
from scorer.scoring.classifier import Classifier
from tests.support.helpers import Project
from tests.support.imagegen import CLASS_COLOURS
from tests.support.poison import poison_decode, poison_video_decode
from tests.support.videogen import (
    CONTAINERS,
    TOP_BAR,
    Reel,
    audio_only,
    declared_length,
    encode,
    hostile_videos,
    huge_frames,
    live_recording,
    many_streams,
    reel,
)

RED, GREEN, BLUE = CLASS_COLOURS["High"], CLASS_COLOURS["Neutral"], CLASS_COLOURS["Low"]
SQUISH = ItemGeometry("squish", (32, 32))
CROP = ItemGeometry("crop", (24, 24))
HOOK_RED = [(3.0, RED), (7.0, BLUE)]  # 10 s: the hook red (High), the rest blue (Low)


def _dominant(pixels: np.ndarray) -> str:
    """Which class colour a frame's pixels are closest to, on average."""
    mean = pixels.reshape(-1, 3).mean(axis=0)
    return min(CLASS_COLOURS, key=lambda name: float(np.abs(mean - np.array(CLASS_COLOURS[name])).sum()))


# ---- a video by its content


@pytest.mark.parametrize(("suffix", "expected"), [("mp4", "MP4"), ("mov", "MOV"), ("m4v", "M4V"), ("webm", "WEBM"),
                                                  ("mkv", "MKV")])
def test_a_video_is_known_by_its_first_bytes(tmp_path: Path, suffix: str, expected: str) -> None:
    codec = "vp9" if suffix in ("webm", "mkv") else "h264"
    data = encode(Reel(((1.0, RED),), codec=codec), suffix)
    assert video_format(data[:64]) == expected
    named_otherwise = tmp_path / "creative.jpg"
    named_otherwise.write_bytes(data)
    assert sniff_video_file(named_otherwise) == expected


@pytest.mark.parametrize("head", [
    b"\x00\x00\x00\x1cftypheic\x00\x00\x00\x00mif1heic",  # a HEIF still: the same box, not a video
    b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1",
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\x89PNG\r\n\x1a\n", b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"this is not a video", b""])
def test_stills_and_other_bytes_are_not_videos(tmp_path: Path, head: bytes) -> None:
    assert video_format(head) is None
    named_as_video = tmp_path / "clip.mp4"
    named_as_video.write_bytes(head)
    assert sniff_video_file(named_as_video) is None


def test_a_link_or_a_missing_file_is_left_for_decode_file_to_reject(tmp_path: Path) -> None:
    target = reel(tmp_path / "reel.mp4", [(1.0, RED)])
    (tmp_path / "link.mp4").symlink_to(target)
    assert sniff_video_file(tmp_path / "link.mp4") is None
    assert sniff_video_file(tmp_path / "gone.mp4") is None


# ---- the probe, before any frame is decoded


@pytest.mark.parametrize(("limits", "reason"), [
    (VideoLimits(max_seconds=8), "video is 10.0 s long: the limit is `video.max_seconds` (8)"),
    (VideoLimits(max_megapixels=0.005), "video frames are 64×112 (0.00717 MP): the limit is "
                                        "`video.max_megapixels` (0.005)"),
    (VideoLimits(max_file_mb=0.001), "file too large"),
])
def test_each_limit_rejects_with_a_reason_that_names_its_key(tmp_path: Path, limits: VideoLimits,
                                                             reason: str) -> None:
    path = reel(tmp_path / "reel.mp4", HOOK_RED)
    with pytest.raises(ImageError) as caught:
        decode_video(path, SQUISH, limits, 24)
    assert str(caught.value).startswith(reason)


@pytest.mark.parametrize(("make", "reason"), [
    (huge_frames, "video frames are 7680×4320 (33.2 MP): the limit is `video.max_megapixels` (9)"),
    (lambda: many_streams(9), "video has 10 streams: the limit is `video.max_streams` (8)"),
    (lambda: declared_length(3 * 3600 + 12 * 60), "video is 3 h 12 min long: the limit is `video.max_seconds` (900)"),
    (audio_only, "no video stream: the file holds only audio"),
], ids=["8k", "streams", "hours", "audio"])
def test_the_probe_rejects_before_decoding_a_frame(tmp_path: Path, make: Callable[[], bytes], reason: str) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(make())
    started = time.monotonic()
    with pytest.raises(ImageError) as caught:
        decode_video(path, SQUISH, VideoLimits(), 24)
    assert str(caught.value) == reason
    assert time.monotonic() - started < 1.0  # an 8K frame alone takes longer to decode and convert


def _patched(data: bytes, box: bytes, offset: int, value: int) -> bytes:
    """Every `box` in an MP4 with the 32-bit field `offset` bytes past its type set to `value`."""
    out, at = bytearray(data), data.find(box)
    while at >= 0:
        struct.pack_into(">I", out, at + offset, value)
        at = data.find(box, at + 1)
    return bytes(out)


@pytest.mark.parametrize("value", [0, 0xFFFFFFFF])
def test_a_malformed_duration_is_corrupt_not_a_crash(value: int) -> None:
    data = encode(Reel(tuple(HOOK_RED), faststart=True), "mp4")
    for box in (b"mvhd", b"mdhd"):  # version 0: the duration follows type, version, two dates and the timescale
        data = _patched(data, box, 20, value)
    with pytest.raises(ImageError, match=f"^{CORRUPT_VIDEO}$"):
        decode_video(data, SQUISH, VideoLimits(), 24)


def test_a_video_that_stops_before_its_declared_end_is_incomplete() -> None:
    data = encode(Reel(((1.0, RED), (2.0, BLUE)), codec="vp9"), "webm")
    assert data.count(b"00:00:03.000000000") == 1  # the track's DURATION tag
    longer = data.replace(b"00:00:03.000000000", b"00:00:09.000000000")
    with pytest.raises(ImageError, match=rf"^{CORRUPT_VIDEO}: its frames stop at 2\.9 s of 9\.0 s$"):
        decode_video(longer, SQUISH, VideoLimits(), 24)


def test_a_half_copied_video_is_rejected() -> None:
    for faststart in (False, True):  # the index after the frames (cut off), or before them
        data = encode(Reel(tuple(HOOK_RED), faststart=faststart), "mp4")
        with pytest.raises(ImageError, match=f"^{CORRUPT_VIDEO}"):
            decode_video(data[: len(data) // 2], SQUISH, VideoLimits(), 24)


def test_a_live_recording_without_a_duration_says_how_to_fix_it() -> None:
    with pytest.raises(ImageError, match="declares no duration .*save it again as a finished file"):
        decode_video(live_recording(), SQUISH, VideoLimits(), 24)


# ---- frames that mean something


def test_the_samples_are_the_cover_the_hook_then_the_rest_evenly() -> None:
    samples = sample_times(60.0, VideoLimits(frames=16, hook_seconds=3.0))
    times = [t for t, _ in samples]
    hook = [t for t, in_hook in samples if in_hook]
    rest = [t for t, in_hook in samples if not in_hook]
    assert len(samples) == 16 and times == sorted(times) and times[0] == 0.0
    assert len(hook) == 8 and all(t < 3.0 for t in hook)
    assert all(3.0 < t < 60.0 for t in rest)
    assert np.allclose(np.diff(rest), 57.0 / 8)  # evenly, each in the middle of its eighth
    short = sample_times(2.0, VideoLimits(frames=16, hook_seconds=3.0))
    assert len(short) == 16 and all(in_hook for _, in_hook in short) and short[-1][0] < 2.0


def test_decoding_samples_the_cover_hook_and_rest_with_their_times_and_thumbnails(tmp_path: Path) -> None:
    video = decode_video(reel(tmp_path / "reel.mp4", HOOK_RED), SQUISH, VideoLimits(), 24)
    assert isinstance(video, DecodedVideo) and video.format == "MP4" and video.codec == "h264"
    assert video.pixels is not None and video.pixels.shape == (16, 32, 32, 3)
    assert len(video.times) == len(video.in_hook) == len(video.frame_thumbnails) == 16
    assert video.times[0] == 0.0 and list(video.times) == sorted(video.times) and video.duration == 10.0
    assert video.in_hook == tuple(t < 3.0 for t in video.times)
    assert [_dominant(p) for p in video.pixels] == ["High" if h else "Low" for h in video.in_hook]
    assert video.thumbnail == video.frame_thumbnails[0]
    assert Image.open(io.BytesIO(video.frame_thumbnails[5])).size == (14, 24)  # 64×112 within 24 px
    assert (video.width, video.height, video.file_bytes) == (64, 112, (tmp_path / "reel.mp4").stat().st_size)
    assert video.prints is not None and "16 frames scored, 8 in the first 3 s" in video.notes[0]


def test_a_long_video_costs_no_more_to_decode_than_a_short_one(tmp_path: Path) -> None:
    """The hook is decoded forward; beyond it each frame is reached from the keyframe before it."""
    costs = {}
    for seconds in (12, 60):
        path = reel(tmp_path / f"{seconds}.mp4", [(3.0, RED), (seconds - 3.0, BLUE)], keyframe_seconds=2.0)
        costs[seconds] = decode_video(path, SQUISH, VideoLimits(), 0).decoded_frames
    hook_frames = 27  # at 10 fps: the hook's last sample is at 2.625 s
    assert costs[60] <= costs[12], costs  # not 5 times as many: there a sample is rarely a keyframe interval away
    # once through the hook, then each later frame from a keyframe near it: that keyframe, and one frame ahead
    assert costs[60] <= hook_frames + 1 + 8 * 2, costs


def test_a_video_with_frames_far_apart_gives_the_frame_on_screen(tmp_path: Path) -> None:
    """A screen recording writes a frame only when something changes: the cover stays on screen until then."""
    video = decode_video(declared_length(600), SQUISH, VideoLimits(), 0)
    assert video.times == (0.0,) and video.duration == pytest.approx(600, abs=1)  # the next frame is at 599 s


@pytest.mark.parametrize("rotate", [90, 180, 270])
def test_a_rotated_phone_video_is_shown_upright(rotate: int) -> None:
    video = decode_video(encode(Reel(tuple(HOOK_RED), size=(64, 112), rotate=rotate, top_bar=True)), SQUISH,
                         VideoLimits(), 24)
    assert (video.width, video.height) == (64, 112)  # 9:16, as people see it
    assert video.pixels is not None
    top, bottom = video.pixels[0][:3].reshape(-1, 3).mean(axis=0), video.pixels[0][-3:]
    assert np.abs(top - TOP_BAR).max() < 20 and _dominant(bottom) == "High"
    assert Image.open(io.BytesIO(video.frame_thumbnails[0])).size == (14, 24)


def test_without_geometry_only_thumbnails_or_only_the_cover_are_decoded() -> None:
    data = encode(Reel(tuple(HOOK_RED), size=(64, 112), rotate=90))
    filmstrip = decode_video(data, None, VideoLimits(), 24)
    assert filmstrip.pixels is None and filmstrip.prints is None and len(filmstrip.frame_thumbnails) == 16
    vetted = decode_video(data, None, VideoLimits(), 0)
    assert vetted.times == (0.0,) and vetted.decoded_frames <= 2 and vetted.thumbnail is None
    assert (vetted.width, vetted.height, vetted.duration) == (64, 112, 10.0)  # upright, from the cover


def test_non_square_pixels_are_shown_at_their_display_size() -> None:
    video = decode_video(encode(Reel(tuple(HOOK_RED), size=(64, 112), sar=Fraction(4, 3))), SQUISH,
                         VideoLimits(), 24)
    assert (video.width, video.height) == (64, 112)
    assert any("non-square pixels: 48×112 stored, shown as 64×112" in n for n in video.notes)


@pytest.mark.parametrize(("container", "codec"), [(c, k) for c, (_, codecs) in CONTAINERS.items()
                                                  for k in sorted(codecs)])
def test_every_codec_and_container_decodes(container: str, codec: str) -> None:
    video = decode_video(encode(Reel(tuple(HOOK_RED), codec=codec), container), SQUISH, VideoLimits(), 0)
    assert video.format == {"mkv": "MKV"}.get(container, container.upper())
    assert video.codec == {"av1": "libdav1d"}.get(codec, codec)
    assert video.pixels is not None and len(video.pixels) == 16
    assert [_dominant(p) for p in video.pixels] == ["High" if h else "Low" for h in video.in_hook]


@pytest.mark.parametrize(("geometry", "rotate"), [(SQUISH, 0), (CROP, 90), (ItemGeometry("pad", (24, 24)), 0)])
def test_each_frame_gets_exactly_the_pixels_of_the_same_frame_as_a_png_still(
        tmp_path: Path, geometry: ItemGeometry, rotate: int) -> None:
    data = encode(Reel(tuple(HOOK_RED), size=(48, 80), rotate=rotate))
    video = decode_video(data, geometry, VideoLimits(), 24)
    with av.open(io.BytesIO(data)) as container:  # every frame, as a player would show it
        shown = {round(float(f.time), 6): f.to_image().rotate(f.rotation, expand=True)
                 for f in container.decode(video=0)}
    assert video.pixels is not None
    for i, when in enumerate(video.times):
        still = tmp_path / f"frame{i}.png"
        shown[when].save(still)
        as_still = decode_file(still, geometry, ImageLimits(), 24)
        assert as_still.pixels is not None and np.array_equal(video.pixels[i], as_still.pixels), when
        assert video.frame_thumbnails[i] == as_still.thumbnail


# ---- the weighted mean


def test_the_hook_weighs_more_than_all_the_rest_together() -> None:
    probs = np.array([[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    hook = (True, True, False, False, False)
    assert np.allclose(video_probabilities(probs, hook), [0.4, 0.6])
    assert np.allclose(video_probabilities(probs, hook, hook_weight=0.5), [0.5, 0.5])
    assert np.allclose(video_probabilities(probs[:2], hook[:2]), [0.0, 1.0])  # all hook: a plain mean
    assert np.allclose(video_probabilities(probs, (False,) * 5), probs.mean(axis=0))


def test_the_same_frames_in_opposite_order_score_higher_with_the_stronger_hook(watched: Project) -> None:
    classifier = Classifier(load_settings(watched.config), explain=False)
    assert classifier.geometry is not None
    high = classifier.classes.index("High")
    scores = {}
    for name, segments in {"red first": HOOK_RED, "red last": HOOK_RED[::-1]}.items():
        video = decode_video(encode(Reel(tuple(segments), size=(96, 160))), classifier.geometry, VideoLimits(), 0)
        assert video.pixels is not None
        scores[name] = video_probabilities(classifier.predict_with_embedding(video.pixels)[0], video.in_hook)
    assert scores["red first"][high] > scores["red last"][high] + 0.3, scores
    assert not np.allclose(scores["red first"], scores["red last"])


# ---- in the decoding workers


def _pool(tmp_path: Path, workers: int = 2, **video: object) -> DecodePool:
    limits = VideoLimits(**video)  # type: ignore[arg-type]
    return DecodePool(DecodeJob(SQUISH, ImageLimits(), 24, video=limits, decode_video=poison_video_decode),
                      workers=workers, timeout=20)


def test_the_hostile_corpus_through_the_pool_is_all_accounted_for(tmp_path: Path) -> None:
    expect = hostile_videos(tmp_path / "in")
    paths = sorted((tmp_path / "in").iterdir())
    started = time.monotonic()
    with _pool(tmp_path) as pool:
        outcomes = dict(pool.imap(paths))
    assert time.monotonic() - started < 30
    assert sorted(outcomes) == paths
    for path, outcome in outcomes.items():
        want = expect[path.name]
        if want.outcome == "rejected":
            assert isinstance(outcome, ImageError) and want.text in str(outcome), (path.name, outcome)
        else:
            assert isinstance(outcome, Decoded), (path.name, outcome)
            assert isinstance(outcome, DecodedVideo) == (want.text == "video"), path.name
    assert outcomes[tmp_path / "in/photo.mp4"].format == "JPEG"  # type: ignore[union-attr]
    assert outcomes[tmp_path / "in/reel.jpg"].format == "MP4"  # type: ignore[union-attr]


def test_without_video_limits_the_pool_leaves_videos_to_the_still_decoder(tmp_path: Path) -> None:
    path = reel(tmp_path / "reel.mp4", HOOK_RED)
    with DecodePool(DecodeJob(SQUISH, ImageLimits(), 24), workers=1, timeout=20) as pool:
        ((_, outcome),) = pool.imap([path])
    assert isinstance(outcome, ImageError) and str(outcome).startswith("not an image")


def test_a_decoder_crash_costs_that_file_and_not_the_batch(tmp_path: Path) -> None:
    names = ["a.mp4", "crash.mp4", "b.mp4", "crash2.mp4", "c.mp4"]
    paths = [reel(tmp_path / name, HOOK_RED) for name in names]
    with _pool(tmp_path, workers=1) as pool:
        outcomes = [outcome for _, outcome in pool.imap(paths)]
    assert [type(o).__name__ for o in outcomes] == ["DecodedVideo", "ImageError", "DecodedVideo", "ImageError",
                                                    "DecodedVideo"]
    assert str(outcomes[1]) == "the file crashes the video decoder"


def test_a_video_has_its_own_time_budget(tmp_path: Path) -> None:
    paths = [reel(tmp_path / name, HOOK_RED) for name in ("hang.mp4", "after.mp4")]
    started = time.monotonic()
    with _pool(tmp_path, workers=1, timeout=1.0) as pool:  # stills keep the pool's 20 s
        outcomes = [outcome for _, outcome in pool.imap(paths)]
    assert time.monotonic() - started < 10
    assert str(outcomes[0]) == "video takes over 1 s to decode: the limit is `video.timeout` (1)"
    assert isinstance(outcomes[1], DecodedVideo)


def test_a_video_decodes_within_a_memory_limit_that_stills_do_not_keep(tmp_path: Path) -> None:
    """'hog' asks for 2 GiB of address space: refused within the video's 256 MB, granted to a still after it."""
    paths = [reel(tmp_path / "hog.mp4", HOOK_RED), reel(tmp_path / "next.mp4", HOOK_RED)]
    Image.new("RGB", (64, 48), RED).save(tmp_path / "hog.png")
    job = DecodeJob(SQUISH, ImageLimits(), 24, poison_decode, VideoLimits(max_memory_mb=256), poison_video_decode)
    with DecodePool(job, workers=1, timeout=20) as pool:
        outcomes = [outcome for _, outcome in pool.imap([*paths, tmp_path / "hog.png"])]
    assert str(outcomes[0]) == "video needs more memory to decode than `video.max_memory_mb` (256) allows"
    assert isinstance(outcomes[1], DecodedVideo) and type(outcomes[2]) is Decoded
