"""A hostile-input corpus, generated on the fly, with what the scorer must do with each entry.

Each Expect names the outcome (scored / rejected / duplicate) and a piece of text that must
appear in the note, the reason or the original's name.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.imagegen import CLASS_COLOURS, creative


@dataclass(frozen=True)
class Expect:
    """What must become of one corpus entry."""

    outcome: str  # "scored", "rejected" or "duplicate"
    text: str = ""


def _jpeg(im: Image.Image, **kwargs: object) -> bytes:
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90, **kwargs)
    return out.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid greyscale PNG of width×height zeros: a few hundred KB that would decode to width×height bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (width + 1)  # filter byte + pixels
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def make_corpus(inbox: Path, outside: Path) -> dict[str, Expect]:
    """Write the corpus into `inbox` (a symlink points into `outside`); return name -> expectation."""
    inbox.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    red = creative(CLASS_COLOURS["High"], (320, 240), seed=1)
    good = _jpeg(red)
    expect: dict[str, Expect] = {}

    def put(name: str, data: bytes, what: Expect) -> None:
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        (inbox / name).write_bytes(data)
        expect[name] = what

    put("good.jpg", good, Expect("scored"))
    put("zero.jpg", b"", Expect("rejected", "empty file (0 bytes)"))
    put("truncated.jpg", good[: len(good) // 2], Expect("rejected", "file is incomplete or corrupt"))
    put("notes.jpg", b"Campaign notes: launch on Monday.\n" * 20, Expect("rejected", "not an image"))
    put("bomb.png", png_bomb(20000, 20000), Expect("rejected", "image too large: 20000×20000 pixels, limit 100 MP"))
    cmyk = creative(CLASS_COLOURS["Neutral"], (200, 150), seed=2).convert("CMYK")
    put("cmyk.jpg", _jpeg(cmyk), Expect("scored", "CMYK converted to RGB"))
    grey16 = Image.fromarray((np.linspace(0, 65535, 160 * 120).reshape(120, 160)).astype(np.uint16))
    out = io.BytesIO()
    grey16.save(out, "PNG")
    put("grey16.png", out.getvalue(), Expect("scored", "16-bit: scored as fastai reads it"))
    rgba = red.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))
    out = io.BytesIO()
    rgba.save(out, "PNG")
    put("alpha.png", out.getvalue(), Expect("scored", "transparency: scored as fastai reads it (alpha ignored)"))
    frames = [creative(c, (120, 90), seed=i) for i, c in enumerate(CLASS_COLOURS.values())]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    put("animated.gif", out.getvalue(), Expect("rejected", "GIF files are not accepted (accepted: JPEG, PNG, WEBP)"))
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0)
    put("animated.webp", out.getvalue(), Expect("scored", "animated: first of 3 frames scored"))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to show upright
    put("rotated.jpg", _jpeg(creative(CLASS_COLOURS["Low"], (300, 200), seed=3), exif=exif.tobytes()),
        Expect("scored", "EXIF orientation: scored as stored, as fastai reads it"))
    out = io.BytesIO()
    creative(CLASS_COLOURS["Neutral"], (160, 160), seed=4).save(out, "WEBP")
    put("plain.webp", out.getvalue(), Expect("scored"))
    huge = Image.linear_gradient("L").resize((9000, 9000)).convert("RGB")
    put("huge-9000x9000.jpg", _jpeg(huge), Expect("scored"))
    (outside / "secret.jpg").write_bytes(good)
    (inbox / "link.jpg").symlink_to(outside / "secret.jpg")
    expect["link.jpg"] = Expect("rejected", "symbolic link: not followed")
    os.mkfifo(inbox / "pipe.jpg")
    expect["pipe.jpg"] = Expect("rejected", "not a regular file (named pipe): not opened")
    put("x.jpg/inside.jpg", _jpeg(creative(CLASS_COLOURS["Low"], (100, 100), seed=5)), Expect("scored"))
    for i, lead in enumerate("=+-@"):
        put(f"{lead}1+1 cmd.jpg", _jpeg(creative(CLASS_COLOURS["High"], (100, 80), seed=10 + i)), Expect("scored"))
    put("ctrl\x07bell\x1besc.jpg", _jpeg(creative(CLASS_COLOURS["Neutral"], (90, 90), seed=20)), Expect("scored"))
    long_name = "long-" + "n" * 241 + ".jpg"
    put(long_name, _jpeg(creative(CLASS_COLOURS["Low"], (90, 90), seed=21)), Expect("scored"))
    put("copy-a.jpg", _jpeg(creative(CLASS_COLOURS["Low"], (90, 70), seed=30)), Expect("scored"))
    put("copy-b.jpg", (inbox / "copy-a.jpg").read_bytes(), Expect("duplicate", "copy-a.jpg"))
    return expect


# Shown in reports with control characters replaced: what a marketer sees for each corpus name.
def shown(name: str) -> str:
    """The corpus name as the report shows it: control characters dropped from names people read."""
    return name.replace("\x07", "").replace("\x1b", "")
