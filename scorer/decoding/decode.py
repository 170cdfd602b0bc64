"""Decode a vetted image into the learner's input pixels, reproducing its validation-time item transform.

Only Pillow and numpy are imported here: this module runs inside the decoding
worker processes, which must start fast and stay small.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from scorer.decoding.prints import creative_prints
from scorer.decoding.vet import ImageLimits, open_image, read_regular_file
from scorer.errors import ImageError
from scorer.fsutil import sha256_bytes

_EXIF_ORIENTATION = 0x0112
# fastai's pad modes in numpy's words
_PAD_MODES: dict[str, Literal["constant", "edge", "reflect"]] = {"zeros": "constant", "border": "edge",
                                                                  "reflection": "reflect"}


@dataclass(frozen=True)
class ItemGeometry:
    """How one decoded image becomes model input (the learner's Resize, as an ItemSpec)."""

    method: str
    size: tuple[int, int]
    pad_mode: str = "reflection"
    squish_to: tuple[int, int] | None = None
    max_scale: int = 8  # largest JPEG DCT scale allowed (1/2, 1/4, 1/8); 1 decodes at full size
    probe: bool = False  # decode at full size for scoring, and drafted too, for the decode check

    @property
    def draft_size(self) -> tuple[int, int]:
        """Decode JPEGs to at least twice the largest size the transform resizes to."""
        w, h = self.squish_to or self.size
        return (2 * w, 2 * h)

    def draft_request(self, width: int, height: int) -> tuple[int, int] | None:
        """The size to ask Image.draft for: twice the target, and no less than 1/max_scale of the image."""
        if self.max_scale <= 1:
            return None
        dw, dh = self.draft_size
        # Pillow takes the largest s in 8, 4, 2, 1 within min(width // request_w, height // request_h);
        # asking for width // max_scale keeps that within max_scale without lowering it further
        return (max(dw, width // self.max_scale), max(dh, height // self.max_scale))


@dataclass
class Decoded:
    """One vetted image: its facts, the model-sized pixels and a thumbnail."""

    sha256: str
    width: int
    height: int
    format: str
    file_bytes: int
    modified: float
    pixels: np.ndarray | None = None
    thumbnail: bytes | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    # with ItemGeometry.probe: the DCT scale drafting would use and the pixels it gives (None at scale 1)
    probe: tuple[int, np.ndarray] | None = None
    prints: bytes | None = None  # perceptual hashes of the upright image (scorer.decoding.prints), when scored


def model_and_shown(im: Image.Image, notes: list[str], *, for_people: bool = True) -> tuple[Image.Image, Image.Image]:
    """Load any accepted image: the RGB pixels the model sees, and the picture people see, which thumbnails show.

    The model sees exactly what fastai's `PILImage.create` gives, on which the learner was trained
    and validated: `convert("RGB")` of the stored pixels, with no EXIF rotation, alpha ignored and
    16-bit values clipped. People see the image upright, transparency flattened onto white and
    16-bit values scaled down; the notes say where the two differ. With `for_people=False` (no thumbnail
    wanted) that picture is not made, and the model's pixels come back in its place.
    """
    frames = getattr(im, "n_frames", 1)
    if frames > 1:
        notes.append(f"animated: first of {frames} frames scored")
    try:
        im.load()
        turned = im.getexif().get(_EXIF_ORIENTATION, 1) not in (0, 1)
        shown = ImageOps.exif_transpose(im) if turned and for_people else im
    except (OSError, SyntaxError, ValueError, EOFError):
        raise ImageError("file is incomplete or corrupt") from None
    model = im if im.mode == "RGB" else im.convert("RGB")
    sixteen = im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I")
    transparent = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info)
    if turned:
        notes.append("EXIF orientation: scored as stored, as fastai reads it; thumbnail shown upright")
    if im.mode == "CMYK":
        notes.append("CMYK converted to RGB")
    if sixteen:
        notes.append("16-bit: scored as fastai reads it (values above 255 clipped); thumbnail scaled to 8 bits")
    elif transparent:
        notes.append("transparency: scored as fastai reads it (alpha ignored); thumbnail flattened onto white")
    if not for_people or not (turned or sixteen or transparent):
        return model, model
    if sixteen:  # the model sees fastai's clipping; people see the top 8 bits instead of a white field
        grey = (np.asarray(shown, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8)
        return model, Image.fromarray(grey, "L").convert("RGB")
    if transparent:
        rgba = shown.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return model, Image.alpha_composite(white, rgba).convert("RGB")
    return model, shown if shown.mode == "RGB" else shown.convert("RGB")


def resize_like_fastai(
    im: Image.Image, geometry: ItemGeometry, full_size: tuple[int, int] | None = None, scale: int = 1
) -> Image.Image:
    """Apply fastai's validation-time Resize (or RandomResizedCrop) to an RGB image.

    `im` may be a JPEG decoded in draft mode at 1/`scale` of `full_size`: the crop is then
    computed on the full size, as fastai does, and mapped onto the smaller image, which stays
    closer to fastai's pixels than cropping the small image with its own rounding.
    """
    w, h = full_size or im.size
    whole = (0, 0, w / scale, h / scale) if scale > 1 else None
    if geometry.method == "squish":
        return im.resize(geometry.size, Image.Resampling.BILINEAR, box=whole)
    if geometry.method == "center":
        assert geometry.squish_to is not None
        squished = im.resize(geometry.squish_to, Image.Resampling.BILINEAR, box=whole)
        (sw, sh), (tw, th) = geometry.squish_to, geometry.size
        left, top = (sw - tw) // 2, (sh - th) // 2
        return squished.crop((left, top, left + tw, top + th))
    tw, th = geometry.size
    ratio_w, ratio_h = w / tw, h / th
    if geometry.method == "crop":
        m = ratio_w if ratio_w < ratio_h else ratio_h
    else:
        m = ratio_w if ratio_w > ratio_h else ratio_h
    cw, ch = int(m * tw), int(m * th)
    left, top = int(0.5 * (w - cw)), int(0.5 * (h - ch))
    if geometry.method == "crop":
        box = (max(left, 0), max(top, 0), min(left + cw, w), min(top + ch, h))
        if scale == 1:  # exactly fastai's crop, then resize
            return im.crop(box).resize(geometry.size, Image.Resampling.BILINEAR)
        x0, y0, x1, y1 = (v / scale for v in box)
        return im.resize(geometry.size, Image.Resampling.BILINEAR, box=(x0, y0, x1, y1))
    # pad: rare enough to pad the (possibly smaller) image in its own pixels
    w, h = im.size
    m = w / tw if w / tw > h / th else h / th
    cw, ch = int(m * tw), int(m * th)
    left, top = int(0.5 * (w - cw)), int(0.5 * (h - ch))
    pads = ((max(-top, 0), max(ch - h + top, 0)), (max(-left, 0), max(cw - w + left, 0)), (0, 0))
    mode: Literal["constant", "edge", "reflect"] = _PAD_MODES[geometry.pad_mode]
    padded = np.pad(np.asarray(im), pads, mode=mode)
    return Image.fromarray(padded).resize(geometry.size, Image.Resampling.BILINEAR)


def thumbnail_bytes(im: Image.Image, px: int) -> bytes:
    """A small JPEG of an already-decoded image, for the report."""
    thumb = im.copy()
    thumb.thumbnail((px, px), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    thumb.save(out, "JPEG", quality=80)
    return out.getvalue()


def decode_file(path: Path, geometry: ItemGeometry | None, limits: ImageLimits, thumb_px: int) -> Decoded:
    """Vet and decode one file into model-sized pixels (or only vet it when geometry is None)."""
    data, st = read_regular_file(path, limits.max_bytes)
    return decode_bytes(data, st.st_mtime, geometry, limits, thumb_px)


def decode_bytes(
    data: bytes, modified: float, geometry: ItemGeometry | None, limits: ImageLimits, thumb_px: int
) -> Decoded:
    """Vet and decode a file's bytes, already read (by read_regular_file, or from object storage).

    With geometry.probe, the pixels of a drafted decode come back too, for the decode check.
    """
    if len(data) > limits.max_bytes:
        raise ImageError(f"file too large: {len(data) / 2**20:.0f} MB, limit {limits.max_bytes / 2**20:.0f} MB")
    sha = sha256_bytes(data)
    probing = geometry is not None and geometry.probe
    exact = dataclasses.replace(geometry, max_scale=1) if geometry is not None and probing else geometry
    # a scored image is also fingerprinted as people see it (upright), as the post of it will be
    loaded = _load(data, exact, limits, thumb_px, for_people=bool(thumb_px) or geometry is not None)
    pixels = np.asarray(resize_like_fastai(loaded.rgb, geometry, loaded.stored, loaded.scale)) if geometry else None
    thumb = thumbnail_bytes(loaded.shown, thumb_px) if thumb_px else None
    prints = creative_prints(loaded.shown) if geometry else None
    fmt, (width, height), notes = loaded.format, loaded.upright, loaded.notes
    del loaded
    probe = None
    if geometry is not None and probing and fmt in ("JPEG", "MPO"):
        drafted = _load(data, dataclasses.replace(geometry, max_scale=8), limits, thumb_px, for_people=False)
        if drafted.scale > 1:
            drafted_pixels = resize_like_fastai(drafted.rgb, geometry, drafted.stored, drafted.scale)
            probe = (drafted.scale, np.asarray(drafted_pixels))
    return Decoded(sha, width, height, fmt, len(data), modified, pixels, thumb, tuple(notes), probe, prints)


@dataclass
class _Loaded:
    """One decoded image: the model's RGB pixels, the picture people see, and what is known of the file."""

    rgb: Image.Image
    shown: Image.Image  # the model's pixels again when no picture for people was asked for
    format: str
    stored: tuple[int, int]  # full size as stored, which fastai's crop is computed on
    upright: tuple[int, int]  # full size as people see it, after the EXIF orientation
    scale: int  # the DCT scale the JPEG was drafted at; 1 for a full decode
    notes: list[str]


def _load(data: bytes, geometry: ItemGeometry | None, limits: ImageLimits, thumb_px: int, for_people: bool) -> _Loaded:
    """Open, draft (JPEG) and model_and_shown; the picture for people only with `for_people`."""
    im = open_image(data, limits)
    fmt = im.format or "?"
    width, height = im.size
    scale = 1
    if fmt in ("JPEG", "MPO"):
        draft = geometry.draft_request(width, height) if geometry else (max(thumb_px, 256),) * 2
        drafted = im.draft("RGB", draft) if draft else None
        if drafted is not None:
            scale = round(width / drafted[1][2])  # the DCT scale: 1, 2, 4 or 8
    needed = im.size[0] * im.size[1] * max(len(im.getbands()), 3) * (2 if ";16" in im.mode else 1)
    if needed > limits.max_decode_bytes:
        raise ImageError(
            f"image too large to decode: {width}×{height} pixels needs {needed / 2**20:.0f} MB, "
            f"limit {limits.max_decode_bytes / 2**20:.0f} MB (images.decode_memory_mb)"
        )
    notes: list[str] = []
    rgb, picture = model_and_shown(im, notes, for_people=for_people)
    quarter_turn = im.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)  # upright, the sides swap
    upright = (height, width) if quarter_turn else (width, height)
    return _Loaded(rgb, picture, fmt, (width, height), upright, scale, notes)
