"""A generated account for the outcomes tests: creatives and reels, and what Instagram does to them once posted."""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable, Iterator
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from tests.support.imagegen import CLASS_COLOURS

COLOURS = list(CLASS_COLOURS.values())
# Shapes Instagram crops a post to (width / height); None keeps the creative's own.
CROPS: tuple[float | None, ...] = (None, 4 / 5, 1.0, 1.91)
_SIZES = ((1080, 1350), (1200, 1200), (1600, 900), (900, 1600), (1000, 1250))


def banner(seed: int) -> Image.Image:
    """A creative as a designer might make one: a class colour, a gradient, shapes, a headline and grain."""
    rng = np.random.default_rng(seed)
    w, h = _SIZES[seed % len(_SIZES)]
    base = np.array(COLOURS[seed % len(COLOURS)], dtype=np.float32)
    ramp = np.linspace(-40, 40, h, dtype=np.float32)[:, None, None] * rng.uniform(-1, 1, 3).astype(np.float32)
    grain = np.roll(_grain(h, w), (int(rng.integers(0, h)), int(rng.integers(0, w))), axis=(0, 1))
    pixels = (base + ramp) + grain
    im = Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = int(rng.integers(0, w - 50)), int(rng.integers(0, h - 50))
        x1, y1 = x0 + int(rng.integers(40, w // 2)), y0 + int(rng.integers(40, h // 2))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    text = f"SALE {int(rng.integers(10, 90))}% OFF"
    draw.text((w // 10, h // 2), text, fill=(255, 255, 255), font_size=h // 10)
    return im


@functools.lru_cache(maxsize=len(_SIZES))
def _grain(h: int, w: int) -> np.ndarray:
    """Sensor grain (sd 6) for one size, drawn once; each banner shifts it by its own offset."""
    return np.random.default_rng(h * w).standard_normal((h, w, 3), dtype=np.float32) * np.float32(6)


def write_banner(path: Path, seed: int) -> Path:
    """Save a creative as a JPEG with EXIF, as a camera or design tool leaves it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(_banner_jpeg(seed))
    return path


@functools.lru_cache(maxsize=256)
def _banner_jpeg(seed: int) -> bytes:
    """The JPEG of banner(seed), made once per process: the tests write the same accounts again and again."""
    exif = Image.Exif()
    exif[0x010F] = "Generator"  # Make
    exif[0x0131] = "Design tool 1.0"  # Software
    out = io.BytesIO()
    banner(seed).save(out, "JPEG", quality=92, exif=exif)
    return out.getvalue()


def as_posted(source: Path, dest: Path, seed: int) -> Path:
    """What Instagram does to an upload: a crop to an allowed shape, 1080 px wide, a mild filter, EXIF gone."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(_posted_jpeg(source.read_bytes(), seed))
    return dest


@functools.lru_cache(maxsize=256)
def _posted_jpeg(source: bytes, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    with Image.open(io.BytesIO(source)) as opened:
        im = opened.convert("RGB")
    aspect = CROPS[seed % len(CROPS)]
    if aspect is not None:
        w, h = im.size
        cw, ch = (round(h * aspect), h) if w / h > aspect else (w, round(w / aspect))
        im = im.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
    if im.width != 1080:
        im = im.resize((1080, round(1080 * im.height / im.width)), Image.Resampling.BICUBIC)
    im = ImageEnhance.Brightness(im).enhance(float(rng.uniform(0.95, 1.08)))
    im = ImageEnhance.Contrast(im).enhance(float(rng.uniform(0.92, 1.1)))
    im = ImageEnhance.Color(im).enhance(float(rng.uniform(0.9, 1.15)))
    out = io.BytesIO()
    im.save(out, "JPEG", quality=int(rng.integers(70, 86)))  # no exif: stripped
    return out.getvalue()


# Reels: a designer's cut of a banner, and what Instagram does to it once posted (720 px wide, a lower bitrate).

def write_reel(path: Path, seed: int, seconds: float = 6.0, size: tuple[int, int] = (1080, 1920), fps: int = 10
               ) -> Path:
    """A Reel made from banner(seed): a slow pan across it and a square crossing it, so that no two frames are
    alike, encoded with H.264 at 4 bits a pixel per second (8 Mbit/s at 1080×1920) with a keyframe every 2 s."""
    w, h = size
    canvas = np.asarray(banner(seed).resize((w * 5 // 4, h * 5 // 4), Image.Resampling.BILINEAR))
    count = max(2, round(seconds * fps))

    def frames() -> Iterator[np.ndarray]:
        for i in range(count):
            x, y = i * (w // 4) // (count - 1), i * (h // 4) // (count - 1)
            pixels = canvas[y:y + h, x:x + w].copy()
            sx, sy = i * (w - w // 5) // (count - 1), (h // 3 + i * h // (3 * count)) % (h - h // 5)
            pixels[sy:sy + h // 5, sx:sx + w // 5] = (250, 250, 250)
            yield pixels

    path.parent.mkdir(parents=True, exist_ok=True)
    _encode(frames(), path, fps, bit_rate=4 * w * h, gop=2 * fps)
    return path


def launch_reel(source: Path, video: Path, cover: Path | None = None, cover_at: float = 0.0) -> Path:
    """What Instagram does to an uploaded Reel: every frame scaled down by a third (1080 px wide to 720) and
    encoded again at an eighth of its bitrate, with keyframes where its encoder puts them; `cover` gets the
    frame shown at `cover_at` seconds as a JPEG of that width, as Instaloader downloads a Reel's cover."""
    with av.open(str(source)) as box:
        stream = box.streams.video[0]
        fps, width, bit_rate = int(stream.average_rate or 10), stream.width * 2 // 3, stream.codec_context.bit_rate
        pictures = [(float(frame.time or 0.0), _scaled(frame.to_ndarray(format="rgb24"), width))
                    for frame in box.decode(stream)]
    video.parent.mkdir(parents=True, exist_ok=True)
    _encode((pixels for _, pixels in pictures), video, fps, bit_rate=max(bit_rate // 8, 100_000), gop=3 * fps)
    if cover is not None:
        shown = min(pictures, key=lambda p: abs(p[0] - cover_at))[1]
        cover.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(shown).save(cover, "JPEG", quality=80)
    return video


def _scaled(pixels: np.ndarray, width: int) -> np.ndarray:
    h, w = pixels.shape[:2]
    height = round(h * width / w) // 2 * 2  # H.264's 4:2:0 wants an even height
    return np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BICUBIC))


def _encode(frames: Iterable[np.ndarray], path: Path, fps: int, bit_rate: int, gop: int) -> None:
    with av.open(str(path), "w", format="mp4") as box:
        stream = box.add_stream("libx264", rate=fps, options={"preset": "veryfast"})
        stream.pix_fmt, stream.codec_context.bit_rate, stream.codec_context.gop_size = "yuv420p", bit_rate, gop
        for i, pixels in enumerate(frames):
            if i == 0:
                stream.height, stream.width = pixels.shape[:2]
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = i
            box.mux(stream.encode(frame))
        box.mux(stream.encode(None))
