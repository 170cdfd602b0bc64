"""A video's filmstrip: about six of its sampled frames side by side, each with its time and its own score.

The hook's frames are framed in orange and labelled, so a marketer sees at a glance whether the first
seconds carry the video. The same picture goes on the report's Ranking sheet and on the web page's card.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from scorer.results import Frame, duration_text

STRIP_FRAMES = 6
HOOK_COLOUR = (235, 120, 20)
_BORDER = 3
_CAPTION_PX = 13
_MIN_TILE_PX = 58  # room for a caption such as "12.5s · 100"


def strip_frames(frames: Sequence[Frame], wanted: int = STRIP_FRAMES) -> list[Frame]:
    """About `wanted` of the frames, spread evenly from the first to the last, in time order."""
    if len(frames) <= wanted:
        return list(frames)
    step = (len(frames) - 1) / (wanted - 1)
    return [frames[round(i * step)] for i in range(wanted)]


def filmstrip(frames: Sequence[Frame], height_px: int) -> bytes | None:
    """The filmstrip as a JPEG: each chosen frame `height_px` high above its time and score; None without thumbnails."""
    shown = [(f, Image.open(io.BytesIO(f.thumbnail)).convert("RGB")) for f in strip_frames(frames) if f.thumbnail]
    if not shown:
        return None
    tiles = [_tile(frame, im, height_px) for frame, im in shown]
    strip = Image.new("RGB", (sum(t.width for t in tiles) + _BORDER * (len(tiles) - 1), tiles[0].height), "white")
    x = 0
    for tile in tiles:
        strip.paste(tile, (x, 0))
        x += tile.width + _BORDER
    out = io.BytesIO()
    strip.save(out, "JPEG", quality=85)
    return out.getvalue()


def _tile(frame: Frame, im: Image.Image, height_px: int) -> Image.Image:
    """One frame fitted in a box as high as the strip and as wide as a portrait frame of it (landscape frames are
    shrunk, so that every strip has the same width), framed and labelled in orange in the hook, time and score below."""
    box = max(round(height_px * 9 / 16), _MIN_TILE_PX)
    scale = min(box / im.width, height_px / im.height)
    width, height = max(1, round(im.width * scale)), max(1, round(im.height * scale))
    picture = im.resize((width, height), Image.Resampling.BILINEAR)
    tile = Image.new("RGB", (box + 2 * _BORDER, height_px + 2 * _BORDER + _CAPTION_PX), "white")
    draw = ImageDraw.Draw(tile)
    draw.rectangle((0, 0, tile.width - 1, height_px + 2 * _BORDER - 1),
                   fill=HOOK_COLOUR if frame.in_hook else (255, 255, 255))
    tile.paste(picture, (_BORDER + (box - width) // 2, _BORDER + (height_px - height) // 2))
    font = ImageFont.load_default(size=10)
    if frame.in_hook:
        draw.rectangle((_BORDER, _BORDER, _BORDER + 26, _BORDER + 12), fill=HOOK_COLOUR)
        draw.text((_BORDER + 2, _BORDER), "hook", fill="white", font=font)
    when = f"{frame.time:.1f}s" if frame.time < 60 else duration_text(frame.time)
    draw.text((_BORDER, height_px + 2 * _BORDER + 1), f"{when} · {frame.score:.0f}", fill="black", font=font)
    return tile
