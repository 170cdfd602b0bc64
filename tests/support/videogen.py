"""Generated videos for the tests and the video bench: reels whose frames carry a colour signal, and a hostile corpus.

A reel is a list of (seconds, colour) segments, encoded with PyAV in any codec and container the
scorer reads. The colours are tests/support/imagegen.py's CLASS_COLOURS, so the tiny learner tells the
segments apart as it tells stills apart. Tests use small sizes; the bench adds texture and motion
(`detail=True`) so that the bitrate is that of real footage, not of flat colours.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from tests.support.hostile import Expect
from tests.support.imagegen import CLASS_COLOURS, creative

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration to stderr otherwise: errors only

Colour = tuple[int, int, int]
Segment = tuple[float, Colour]

SIZES = {"9:16": (1080, 1920), "1:1": (1080, 1080), "16:9": (1920, 1080)}
CODECS = {"h264": "libx264", "hevc": "libx265", "vp9": "libvpx-vp9", "av1": "libsvtav1", "mpeg4": "mpeg4"}
# the containers by suffix, and the codecs each one takes
CONTAINERS = {"mp4": ("mp4", set(CODECS)), "m4v": ("mp4", set(CODECS)), "mov": ("mov", {"h264", "hevc", "mpeg4"}),
              "webm": ("webm", {"vp9", "av1"}), "mkv": ("matroska", set(CODECS))}
# quiet encoders: x265 and SVT-AV1 print banners otherwise; every encoder fast. x265's CU-tree writes past its
# buffers on frames as small as the tests' (valgrind saw it, glibc aborted a later free): off, it writes in bounds
_OPTIONS = {"libx264": {"preset": "veryfast"},
            "libx265": {"preset": "ultrafast", "x265-params": "log-level=none:cutree=0"},
            "libvpx-vp9": {"deadline": "realtime", "cpu-used": "8"}, "libsvtav1": {"preset": "12"}, "mpeg4": {}}
TOP_BAR = (255, 255, 255)  # the bar `top_bar` draws across the top of the picture as people see it


@dataclass(frozen=True)
class Reel:
    """How to encode one reel: its picture as people see it, and how it is stored."""

    segments: tuple[Segment, ...]
    size: tuple[int, int] = (64, 112)  # width, height as shown (after rotation)
    fps: int = 10
    codec: str = "h264"
    rotate: int = 0  # degrees a player turns the stored picture clockwise (0, 90, 180, 270), as phones store it
    sar: Fraction | None = None  # sample aspect ratio: stored width is shown width / sar
    keyframe_seconds: float = 2.0
    detail: bool = False  # texture, grain and motion, as real footage: several Mbit/s at 1080×1920
    top_bar: bool = False  # a white bar across the top eighth, to tell which way is up
    faststart: bool = False  # the index (moov) before the frames, as streaming sites write MP4s
    reverse: bool = False  # the very same pictures, last first (held in memory: small reels only)


def reel(path: Path, segments: list[Segment], **how: object) -> Path:
    """Encode a reel to `path`; the container follows the suffix (mp4, m4v, mov, webm). See Reel for `how`."""
    spec = Reel(tuple(segments), **how)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(spec, path.suffix.lstrip(".").lower()))
    return path


def encode(spec: Reel, container: str = "mp4") -> bytes:
    """The bytes of one reel in a container named by its suffix."""
    fmt, codecs = CONTAINERS[container]
    assert spec.codec in codecs, f"{container} does not take {spec.codec}"
    options = {"movflags": "+faststart"} if spec.faststart else {}
    if container == "m4v":
        options["brand"] = "M4V "
    with tempfile.TemporaryDirectory() as tmp:  # a path, not a buffer: faststart rewrites the file it wrote
        _write(spec, Path(tmp, f"reel.{container}"), fmt, options)
        return Path(tmp, f"reel.{container}").read_bytes()


def _write(spec: Reel, path: Path, fmt: str, options: dict[str, str]) -> None:
    with av.open(str(path), "w", format=fmt, options=options) as box:
        stream = box.add_stream(CODECS[spec.codec], rate=spec.fps, options=dict(_OPTIONS[CODECS[spec.codec]]))
        width, height = _stored_size(spec)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = max(1, round(spec.keyframe_seconds * spec.fps))
        if spec.detail:
            stream.codec_context.bit_rate = 8_000_000
        if spec.sar is not None:
            stream.codec_context.sample_aspect_ratio = spec.sar
        if spec.rotate:
            stream.set_display_rotation(-spec.rotate)  # PyAV counts counterclockwise
        pictures = reversed(list(_pictures(spec))) if spec.reverse else _pictures(spec)
        for i, shown in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(_as_stored(shown, spec), format="rgb24")
            frame.pts = i
            box.mux(stream.encode(frame))
        box.mux(stream.encode(None))


def _stored_size(spec: Reel) -> tuple[int, int]:
    w, h = spec.size
    if spec.sar is not None:
        w = round(w / spec.sar)
    return (h, w) if spec.rotate in (90, 270) else (w, h)


def _as_stored(shown: np.ndarray, spec: Reel) -> np.ndarray:
    """The picture as people see it, turned and squeezed into what the file stores."""
    if spec.sar is not None:
        h = shown.shape[0]
        shown = np.asarray(Image.fromarray(shown).resize((round(shown.shape[1] / spec.sar), h)))
    # np.rot90 turns counterclockwise: stored turned back by the rotation the player applies clockwise
    return np.ascontiguousarray(np.rot90(shown, k=spec.rotate // 90))


def _pictures(spec: Reel) -> Iterator[np.ndarray]:
    """Each frame as people see it: the segment's colour, with noise (and texture and motion with detail)."""
    w, h = spec.size
    texture = _Texture(spec.size) if spec.detail else None
    i = 0
    for seconds, colour in spec.segments:
        for _ in range(max(1, round(seconds * spec.fps))):
            if texture is None:
                pixels = np.asarray(creative(colour, (w, h), seed=i)).copy()
            else:
                pixels = texture.frame(colour, i)
            if spec.top_bar:
                pixels[: max(1, h // 8)] = TOP_BAR
            yield pixels
            i += 1


class _Texture:
    """Real footage's detail, made cheaply: a scrolling blotchy texture, fresh grain and a moving square."""

    def __init__(self, size: tuple[int, int], seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        w, h = size
        self._size = size
        coarse = rng.integers(-40, 40, (h // 8 + 2, w // 8 + 2, 3), dtype=np.int16)
        self._field = np.repeat(np.repeat(coarse, 8, axis=0), 8, axis=1)  # blotches that move as a whole
        self._grain = [rng.integers(0, 16, (h, w, 3), dtype=np.uint8) for _ in range(5)]
        self._bases: dict[Colour, np.ndarray] = {}

    def frame(self, colour: Colour, i: int) -> np.ndarray:
        w, h = self._size
        if colour not in self._bases:
            self._bases[colour] = (self._field + np.array(colour, np.int16)).clip(0, 239).astype(np.uint8)
        dx, dy = (3 * i) % 8, i % 8
        pixels = self._bases[colour][dy : dy + h, dx : dx + w] + self._grain[i % len(self._grain)]  # below 255
        x, y = (17 * i) % max(1, w - w // 4), (11 * i) % max(1, h - h // 4)
        square = pixels[y : y + h // 4, x : x + w // 4]
        square[:] = np.minimum(square, 205) + 50
        return pixels


def audio_only() -> bytes:
    """An MP4 with one AAC stream and no pictures."""
    return _with_audio(tracks=1, video=False)


def many_streams(tracks: int) -> bytes:
    """An MP4 with one short video stream and `tracks` audio streams."""
    return _with_audio(tracks=tracks, video=True)


def _with_audio(tracks: int, video: bool) -> bytes:
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as box:
        picture = box.add_stream("libx264", rate=10) if video else None
        sounds = [box.add_stream("aac", rate=8000) for _ in range(tracks)]
        if picture is not None:
            picture.width, picture.height, picture.pix_fmt = 32, 32, "yuv420p"
            for i in range(5):
                frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 90, np.uint8), format="rgb24")
                frame.pts = i
                box.mux(picture.encode(frame))
            box.mux(picture.encode(None))
        for sound in sounds:
            for i in range(4):
                chunk = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 8000, i * 1024
                box.mux(sound.encode(chunk))
            box.mux(sound.encode(None))
    return out.getvalue()


def declared_length(seconds: float, size: tuple[int, int] = (16, 16)) -> bytes:
    """A video that says it lasts `seconds`: three frames, the last two at the end (cheap, however long)."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as box:
        stream = box.add_stream("libx264", rate=1)
        stream.width, stream.height, stream.pix_fmt = *size, "yuv420p"
        stream.time_base = Fraction(1, 1000)
        for pts in (0, int(seconds * 1000) - 1000, int(seconds * 1000) - 500):
            frame = av.VideoFrame.from_ndarray(np.full((size[1], size[0], 3), 60, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            box.mux(stream.encode(frame))
        box.mux(stream.encode(None))
    return out.getvalue()


def huge_frames(width: int = 7680, height: int = 4320) -> bytes:
    """One real frame of width×height (8K by default), flat grey: some 100 KB, a fraction of a second to encode."""
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as box:
        stream = box.add_stream("libx264", rate=1, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        frame = av.VideoFrame(width, height, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([128]) * plane.buffer_size)
        box.mux(stream.encode(frame))
        box.mux(stream.encode(None))
    return out.getvalue()


def live_recording() -> bytes:
    """A WebM as a live recorder (a browser's MediaRecorder) leaves it: frames, and no duration anywhere."""
    with tempfile.TemporaryDirectory() as tmp:
        _write(Reel(((3.0, CLASS_COLOURS["High"]),), codec="vp9"), Path(tmp, "live.webm"), "webm", {"live": "1"})
        return Path(tmp, "live.webm").read_bytes()


def bit_flipped(data: bytes, flips: int = 64, seed: int = 3) -> bytes:
    """The bytes with `flips` bits flipped, past the first kilobyte (the header stays readable)."""
    rng = np.random.default_rng(seed)
    flipped = bytearray(data)
    for at in rng.integers(min(1024, len(data) // 2), len(data), flips):
        flipped[at] ^= 1 << int(rng.integers(0, 8))
    return bytes(flipped)


def photo_jpeg() -> bytes:
    """A JPEG still (red, so High)."""
    out = io.BytesIO()
    creative(CLASS_COLOURS["High"], (64, 112), seed=4).save(out, "JPEG", quality=90)
    return out.getvalue()


def hostile_videos(folder: Path) -> dict[str, Expect]:
    """Write the hostile video corpus into `folder`; return name -> what must become of it.

    "scored" means decoded (as a video, or as a still where the text says "still"). No two entries hold the
    same bytes, so that scored end to end none is a duplicate of another.
    """
    folder.mkdir(parents=True, exist_ok=True)
    red_then_blue = [(1.0, CLASS_COLOURS["High"]), (2.0, CLASS_COLOURS["Low"])]
    whole = encode(Reel(tuple(red_then_blue)), "mp4")
    indexed_first = encode(Reel(tuple(red_then_blue), faststart=True), "mp4")
    corpus = {
        "good.mp4": (whole, Expect("scored", "video")),
        "truncated.mp4": (whole[: len(whole) // 2], Expect("rejected", "video is incomplete or corrupt")),
        "truncated-indexed.mp4": (indexed_first[: len(indexed_first) // 2],
                                  Expect("rejected", "video is incomplete or corrupt")),
        "bit-flipped.mp4": (bit_flipped(whole), Expect("scored", "video")),
        "header-then-noise.mp4": (whole[:32] + bytes(np.random.default_rng(5).integers(0, 256, 4000, np.uint8)),
                                  Expect("rejected", "video is incomplete or corrupt")),
        "empty.mp4": (b"", Expect("rejected", "empty file")),
        "text.mp4": (b"this is not a video\n" * 20, Expect("rejected", "not an image")),
        "audio-only.mp4": (audio_only(), Expect("rejected", "no video stream")),
        "many-streams.mp4": (many_streams(9), Expect("rejected", "`video.max_streams` (8)")),
        "hour-long.mp4": (declared_length(3600), Expect("rejected", "video is 1 h 0 min long")),
        "8k.mp4": (huge_frames(), Expect("rejected", "`video.max_megapixels` (9)")),
        "live.webm": (live_recording(), Expect("rejected", "video declares no duration")),
        "photo.mp4": (photo_jpeg(), Expect("scored", "still")),
        "reel.jpg": (indexed_first, Expect("scored", "video")),  # not good.mp4's bytes: that would be a duplicate
    }
    for name, (data, _) in corpus.items():
        (folder / name).write_bytes(data)
    return {name: what for name, (_, what) in corpus.items()}
