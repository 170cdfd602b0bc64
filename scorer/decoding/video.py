"""Decode a video into the frames that mean something, each one the learner's input pixels as a still's would be.

The frames: the cover (the first frame shown), frames through the hook (the first
`hook_seconds`), then frames spaced evenly over the rest, `frames` in all. The hook is decoded
forward from the first frame. Past it, a keyframe within half the spacing of a sample's time
stands in for it, since a keyframe decodes alone; otherwise the decoder seeks to the keyframe
before the time only where that keyframe lies past the frame decoded last, and decodes forward.
So the cost does not grow with the length of the video beyond the seeks. Each frame, upright and
at its display size, goes through decode.py's Resize and thumbnail exactly as a still does. PyAV
is imported to read only here and in video_probe.py, and only once a video arrives (`scorer demo`
imports it to write its reels).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from scorer.decoding import reasons
from scorer.decoding.decode import Decoded, ItemGeometry, resize_like_fastai, thumbnail_bytes
from scorer.decoding.prints import creative_prints
from scorer.decoding.vet import read_regular_file
from scorer.decoding.video_probe import Probe, VideoLimits, probe, video_format
from scorer.errors import ImageError
from scorer.fsutil import sha256_bytes

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

# the display matrix's rotation (degrees counterclockwise, as FFmpeg gives it) -> the turn that shows it upright
_UPRIGHT = {90: Image.Transpose.ROTATE_90, -90: Image.Transpose.ROTATE_270, 270: Image.Transpose.ROTATE_270,
            180: Image.Transpose.ROTATE_180, -180: Image.Transpose.ROTATE_180}
_DEMUXERS = {"MP4": "mov", "MOV": "mov", "M4V": "mov", "M4A": "mov", "WEBM": "matroska", "MKV": "matroska"}
_NO_INDEX_GAP = 2.0  # without a keyframe index, decode forward over gaps up to this many seconds, else seek


@dataclass
class DecodedVideo(Decoded):
    """A vetted video: Decoded's facts (display size, upright), and per sampled frame its pixels, time and thumbnail.

    `pixels` is (F, H, W, 3): frame i's model input, as decode_file gives a still's. `thumbnail` is
    the cover's; `prints` are every sampled frame's prints, one frame after another (a launched video's
    cover may be any of its frames, and its re-encoded copy is sampled the same way).
    """

    times: tuple[float, ...] = ()  # seconds from the first frame, ascending
    in_hook: tuple[bool, ...] = ()
    frame_thumbnails: tuple[bytes, ...] = ()  # one per sampled frame, for a filmstrip
    duration: float = 0.0
    codec: str = ""
    decoded_frames: int = 0  # frames the decoder produced to reach the samples: the work done


def sample_times(duration: float, limits: VideoLimits) -> list[tuple[float, bool]]:
    """The times to show (seconds from the first frame) and whether each is in the hook, ascending.

    Half the frames (the cover first) are spread through the hook, the rest over the middles of equal
    parts of what follows; a video no longer than the hook spreads them all over its length.
    """
    if duration <= limits.hook_seconds:
        return [(i * duration / limits.frames, True) for i in range(limits.frames)]
    hook_count = max(1, limits.frames // 2) if limits.hook_seconds > 0 else 1
    hook = [(i * limits.hook_seconds / hook_count, True) for i in range(hook_count)]
    rest_count, rest = limits.frames - hook_count, duration - limits.hook_seconds
    return hook + [(limits.hook_seconds + (j + 0.5) * rest / rest_count, False) for j in range(rest_count)]


def frame_weights(in_hook: np.ndarray | Sequence[bool], hook_weight: float = 0.6) -> np.ndarray:
    """Each frame's weight in its video's answer: the hook's frames share `hook_weight` equally and the other
    frames share the rest equally, so by default the first seconds weigh more than all the rest together: what
    people see before they scroll on decides. With frames in only one group, that group takes the whole weight.
    """
    hook = np.asarray(in_hook, dtype=bool)
    if hook.all() or not hook.any():
        return np.full(len(hook), 1.0 / len(hook))
    weights: np.ndarray = np.where(hook, hook_weight / hook.sum(), (1.0 - hook_weight) / (~hook).sum())
    return weights


def video_probabilities(frame_probs: np.ndarray, in_hook: np.ndarray | Sequence[bool],
                        hook_weight: float = 0.6) -> np.ndarray:
    """A video's class probabilities: its frames' (F, K) probabilities, weighed by frame_weights."""
    mean: np.ndarray = frame_weights(in_hook, hook_weight) @ np.asarray(frame_probs, dtype=np.float64)
    return mean


def decode_video(source: Path | bytes, geometry: ItemGeometry | None, limits: VideoLimits, thumb_px: int,
                 modified: float = 0.0) -> DecodedVideo:
    """Vet, probe and sample a video (a path, or its bytes already read) into model-sized frames.

    With geometry None only the thumbnails are made; with thumb_px 0 too, only the cover is decoded,
    for the size people see (a phone video's rotation is known from its frames).
    """
    if isinstance(source, Path):
        data, st = read_regular_file(source, limits.max_bytes)
        modified = st.st_mtime
    else:
        data = source
    if len(data) > limits.max_bytes:
        raise ImageError(reasons.video_file_too_large(len(data), limits.max_file_mb))
    fmt = video_format(data[:64])
    if fmt is None:
        raise ImageError(reasons.NOT_A_VIDEO)
    import av

    frames = _Frames(geometry, thumb_px)
    try:
        # only the demuxer the first bytes name: FFmpeg would otherwise try each of the hundreds it knows
        with av.open(io.BytesIO(data), "r", format=_DEMUXERS[fmt], metadata_errors="replace") as container:
            stream, facts = probe(container, limits)
            times = sample_times(facts.duration, limits)
            frames.take(_Cursor(container, stream, facts), times if geometry or thumb_px else times[:1], limits)
    except MemoryError:
        raise  # over the decoding worker's memory limit, which the pool names
    except (av.FFmpegError, ValueError, OverflowError, ZeroDivisionError):
        raise ImageError(reasons.CORRUPT_VIDEO) from None
    assert frames.size is not None  # the cover, or ImageError
    width, height = frames.size
    notes = [f"video {reasons.span(facts.duration)}: {len(frames.times)} frames scored, {sum(frames.hook)} in the "
             f"first {limits.hook_seconds:g} s"] if geometry is not None else []
    if facts.display != facts.stored:
        notes.append(f"non-square pixels: {facts.stored[0]}×{facts.stored[1]} stored, shown as {width}×{height}")
    return DecodedVideo(
        sha256=sha256_bytes(data), width=width, height=height, format=fmt, file_bytes=len(data),
        modified=modified, pixels=np.stack(frames.pixels) if frames.pixels else None,
        thumbnail=frames.thumbs[0] if frames.thumbs else None, notes=tuple(notes), prints=frames.prints,
        times=tuple(frames.times), in_hook=tuple(frames.hook), frame_thumbnails=tuple(frames.thumbs),
        duration=facts.duration, codec=facts.codec, decoded_frames=frames.decoded)


class _Frames:
    """The sampled frames as they arrive: each one's model pixels and thumbnail, not its full-size picture."""

    def __init__(self, geometry: ItemGeometry | None, thumb_px: int) -> None:
        self._geometry, self._thumb_px = geometry, thumb_px
        self.times: list[float] = []
        self.hook: list[bool] = []
        self.pixels: list[np.ndarray] = []
        self.thumbs: list[bytes] = []
        self.prints: bytes | None = None
        self.size: tuple[int, int] | None = None  # the cover's, upright
        self.decoded = 0

    def take(self, cursor: _Cursor, times: list[tuple[float, bool]], limits: VideoLimits) -> None:
        """Each sampled time's frame, two samples closer than a frame apart taken once."""
        rest = [t for t, hook in times if not hook]
        near = (rest[1] - rest[0]) / 2 if len(rest) > 1 else 0.0  # how far a rest frame may move to a keyframe
        for target, in_hook in times:
            frame = cursor.at(target, near=0.0 if in_hook else near)
            when = cursor.seconds(frame)
            if self.times and when <= self.times[-1]:
                continue
            self._add(when, in_hook, cursor.upright(frame, limits))
        self.decoded = cursor.decoded

    def _add(self, when: float, in_hook: bool, image: Image.Image) -> None:
        if self.size is None:
            self.size = image.size
        if self._geometry is not None:  # every sampled frame's prints, in order: a launch shows any of them
            self.prints = (self.prints or b"") + creative_prints(image)
        self.times.append(when)
        self.hook.append(in_hook)
        if self._geometry is not None:
            self.pixels.append(np.asarray(resize_like_fastai(image, self._geometry)))
        if self._thumb_px:
            self.thumbs.append(thumbnail_bytes(image, self._thumb_px))


class _Cursor:
    """One video stream decoded forward, a frame ahead, so that it knows the frame on screen at any time.

    It seeks by the keyframe index: to a keyframe close enough to stand in for the time wanted, or to
    the keyframe before that time where it lies past the frame on screen (decoding on from here would
    cost more). Without an index, it seeks over gaps longer than _NO_INDEX_GAP.
    """

    def __init__(self, container: InputContainer, stream: VideoStream, facts: Probe) -> None:
        self._container, self._stream, self._facts = container, stream, facts
        # One thread: files decode in parallel in the decoding workers. Frame threads would decode frames
        # past each seek's target, and reserve address space per thread (a 64 MB malloc arena each, some
        # 1.1 GB with 16 cores), so that the worker's memory limit would depend on the machine.
        stream.thread_count = 1
        self._frames: Iterator[VideoFrame] = container.decode(stream)
        self._shown: VideoFrame | None = None
        self._ahead: VideoFrame | None = None
        self._start = 0.0
        self._turn: Image.Transpose | None = None
        self.decoded = 0

    def seconds(self, frame: VideoFrame) -> float:
        """A frame's time from the first frame."""
        if frame.time is None:
            raise ImageError(reasons.CORRUPT_VIDEO)
        return round(frame.time - self._start, 6)  # no 2.1999999999999997 for 2.2

    def at(self, target: float, near: float = 0.0) -> VideoFrame:
        """The frame on screen `target` seconds after the first; a keyframe up to `near` away will do."""
        if self._shown is None:
            self._shown = self._first()
        elif (seek_to := self._seek_to(target, near)) is not None:
            self._seek(seek_to)
            if abs(target - self.seconds(self._shown)) <= near:
                return self._shown  # a keyframe decodes alone
        while (ahead := self._peek()) is not None and self.seconds(ahead) <= target:
            self._shown, self._ahead = ahead, None
        if ahead is None:
            self._check_end(target)
        return self._shown

    def upright(self, frame: VideoFrame, limits: VideoLimits) -> Image.Image:
        """The frame as an RGB picture at its display size (sample aspect ratio), turned upright."""
        if frame.width * frame.height > limits.max_megapixels * 1e6:  # the size may change inside the stream
            raise ImageError(reasons.frames_grow((frame.width, frame.height), limits.max_megapixels))
        (dw, _), (sw, _) = self._facts.display, self._facts.stored
        width = max(1, round(frame.width * dw / sw))
        rgb = frame.reformat(width=width, height=frame.height, format="rgb24", src_color_range=frame.color_range)
        image = Image.fromarray(rgb.to_ndarray(), "RGB")
        return image.transpose(self._turn) if self._turn is not None else image

    def _first(self) -> VideoFrame:
        frame = self._pull()
        if frame is None:
            raise ImageError(reasons.NO_FRAME)
        self._start = frame.time or 0.0
        self._turn = _UPRIGHT.get(round(frame.rotation))
        return frame

    def _pull(self) -> VideoFrame | None:
        frame = next(self._frames, None)
        self.decoded += frame is not None
        return frame

    def _peek(self) -> VideoFrame | None:
        if self._ahead is None:
            self._ahead = self._pull()
        return self._ahead

    def _seek_to(self, target: float, near: float) -> float | None:
        """Where to seek on the way to `target`: the keyframe after it if near, else the one before it if that
        lies past the frame on screen; None to decode on from here."""
        assert self._shown is not None
        shown = self.seconds(self._shown)
        if self._ahead is not None and self.seconds(self._ahead) > target:
            return None  # already there
        keys = self._keyframes_around(target)
        if keys is None:
            return target if target - shown > _NO_INDEX_GAP else None
        before, after = keys
        if after is not None and after - target <= near and (before is None or before <= shown
                                                             or after - target < target - before):
            return after
        return target if before is not None and before > shown else None

    def _keyframes_around(self, target: float) -> tuple[float | None, float | None] | None:
        """The keyframes' times just before (or at) and just after `target`, by the index; None without one."""
        entries, base = self._stream.index_entries, self._stream.time_base
        if base is None or len(entries) == 0:
            return None
        # MP4 indexes decoding times, which run a constant few frames before the times shown (B-frames);
        # seeking goes by the times shown. The first entry and the first frame give the difference.
        lead = self._start - float(entries[0].timestamp * base)
        stamp = round((target + self._start - lead) / base)
        found = (entries.search_timestamp(stamp, backward=True), entries.search_timestamp(stamp + 1, backward=False))
        return tuple(  # type: ignore[return-value]
            float(entries[i].timestamp * base) + lead - self._start if i >= 0 else None for i in found)

    def _seek(self, target: float) -> None:
        assert self._stream.time_base is not None
        self._container.seek(round((target + self._start) / self._stream.time_base), stream=self._stream)
        self._frames, self._ahead = self._container.decode(self._stream), None
        frame = self._pull()
        if frame is None:
            raise ImageError(reasons.nothing_at(target))
        self._shown = frame

    def _check_end(self, target: float) -> None:
        """At the last frame: a time well past it means the file stops before the length it declares."""
        assert self._shown is not None
        last = self.seconds(self._shown)
        if target - last > max(0.5, 2 / self._facts.fps if self._facts.fps else 0.0):
            raise ImageError(reasons.frames_stop(last, self._facts.duration))
