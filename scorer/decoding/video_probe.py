"""What a video must satisfy before any frame is decoded: recognised by its content, probed within VideoLimits.

PyAV (FFmpeg inside its wheel) is imported only when a video arrives, inside the functions that
open one: the decoding workers start with Pillow and numpy alone, and a still never loads FFmpeg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from scorer.decoding import reasons
from scorer.errors import ImageError
from scorer.fsutil import open_regular

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.stream import VideoStream

    from scorer.settings import VideoSettings

# ISO base media (MP4, MOV, M4V, 3GP) by the major brand of the `ftyp` box at offset 4. Only video
# brands: HEIF and AVIF stills share the box (heic, mif1, avif) and are not videos.
_BRANDS = {b"qt  ": "MOV", b"M4V ": "M4V", b"M4VH": "M4V", b"M4VP": "M4V", b"M4A ": "M4A",
           **{brand: "MP4" for brand in (b"isom", b"iso2", b"iso4", b"iso5", b"iso6", b"mp41", b"mp42", b"avc1",
                                         b"mmp4", b"dash", b"MSNV", b"3gp4", b"3gp5", b"3gp6", b"3g2a")}}
_EBML = b"\x1a\x45\xdf\xa3"  # Matroska and WebM; the DocType element near the start says which


def video_format(head: bytes) -> str | None:
    """The container a file's first bytes announce (MP4, MOV, M4V, M4A, WEBM, MKV), or None for anything else."""
    if head[4:8] == b"ftyp":
        return _BRANDS.get(head[8:12])
    if head.startswith(_EBML):
        return "WEBM" if b"webm" in head[:64] else "MKV"
    return None


def load_pyav() -> None:
    """Import PyAV now (some 100 MB of address space for FFmpeg's libraries), before a memory limit is measured."""
    import av  # noqa: F401


def sniff_video_file(path: Path) -> str | None:
    """video_format of a file's first bytes; None when it is no video or cannot be read (decode_file says why)."""
    try:
        with open_regular(path) as handle:
            return video_format(handle.read(64))
    except OSError:
        return None


@dataclass(frozen=True)
class VideoLimits:
    """What a video must satisfy, and how it is sampled; the fields are the `video.*` settings' names."""

    max_seconds: float = 900.0
    max_megapixels: float = 9.0  # 4K (3840×2160) is 8.3 MP; 8K is 33 MP
    max_streams: int = 8
    frames: int = 16  # sampled in all: the cover, the hook, then evenly over the rest
    hook_seconds: float = 3.0
    hook_weight: float = 0.6  # the hook's share of the video's probabilities (video_probabilities)
    max_memory_mb: int = 1024  # address space a decoding worker may add to decode one video, beyond its file
    timeout: float = 120.0  # seconds a decoding worker may spend on one video
    max_file_mb: float = 512.0  # read whole, as a still is, before anything else

    @classmethod
    def from_settings(cls, video: VideoSettings) -> VideoLimits:
        """The limits that config.yaml's `video` section sets."""
        return cls(**{f: getattr(video, f) for f in cls.__dataclass_fields__})

    def describe(self) -> str:
        """How videos are sampled and weighed, for the report's Model sheet."""
        hook = max(1, self.frames // 2) if self.hook_seconds > 0 else 1
        return (f"{self.frames} frames per video: the cover, {hook} in all through the first {self.hook_seconds:g} s "
                f"(the hook), then the rest evenly over what follows; each frame scored as a still of it would be. "
                f"A video's probabilities: the hook's frames share {self.hook_weight:.0%}, the others "
                f"{1 - self.hook_weight:.0%} (video.hook_weight). Limits: {self.max_seconds:g} s, "
                f"{self.max_megapixels:g} MP frames, {self.max_streams} streams, {self.max_file_mb:g} MB")

    @property
    def max_bytes(self) -> int:
        """max_file_mb in bytes."""
        return int(self.max_file_mb * 2**20)


@dataclass(frozen=True)
class Probe:
    """What the container says of its video stream, checked against VideoLimits."""

    duration: float  # seconds
    stored: tuple[int, int]  # frame width, height as coded
    display: tuple[int, int]  # after the sample aspect ratio, before any rotation
    codec: str
    streams: int
    fps: float  # the stream's frame rate; 0.0 when it says none


def probe(container: InputContainer, limits: VideoLimits) -> tuple[VideoStream, Probe]:
    """The video stream to sample and its facts; ImageError naming the setting when over a limit."""
    streams = len(container.streams)
    if streams > limits.max_streams:
        raise ImageError(reasons.too_many_streams(streams, limits.max_streams))
    stream = _picture_stream(container)
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise ImageError(reasons.CORRUPT_VIDEO)
    sar = stream.sample_aspect_ratio
    display = (max(1, round(width * sar)), height) if sar and sar > 0 else (width, height)
    megapixels = max(width * height, display[0] * display[1]) / 1e6
    if megapixels > limits.max_megapixels:
        raise ImageError(reasons.frames_too_large(display, megapixels, limits.max_megapixels))
    duration = _duration(container, stream)
    if duration > limits.max_seconds:
        raise ImageError(reasons.too_long(duration, limits.max_seconds))
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate and 0 < rate < 1000 else 0.0
    return stream, Probe(duration, (width, height), display, stream.codec_context.name, streams, fps)


def _picture_stream(container: InputContainer) -> VideoStream:
    from av.stream import Disposition

    # cover art in an MP4 or MKV is a one-picture "video" stream: not the video
    moving = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
    if moving:
        return moving[0]
    if container.streams.audio:
        raise ImageError(reasons.ONLY_AUDIO)
    raise ImageError(reasons.NO_PICTURE)


def _duration(container: InputContainer, stream: VideoStream) -> float:
    """The video stream's own length where the file records one, else the container's; ImageError if neither."""
    own = float(stream.duration * stream.time_base) if stream.duration is not None and stream.time_base else None
    if own is None and "DURATION" in stream.metadata:  # Matroska keeps each track's length as a tag
        own = _clock(stream.metadata["DURATION"])
    whole = container.duration / 1e6 if container.duration is not None else None  # in AV_TIME_BASE
    if own is None and whole is None:
        raise ImageError(reasons.NO_DURATION)
    # a fragmented MP4 may record 0 for the track: its fragments hold the frames, and the container their sum
    seconds = own if own is not None and own > 0 else whole
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise ImageError(reasons.CORRUPT_VIDEO)
    return seconds


def _clock(text: str) -> float | None:
    """Seconds from a Matroska DURATION tag, HH:MM:SS.nnnnnnnnn; None if it is not one."""
    try:
        hours, minutes, seconds = text.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(Fraction(seconds))
    except ValueError:
        return None
