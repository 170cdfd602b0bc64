"""`scorer demo`: synthetic posts whose engagement follows their colour, for `scorer train`, then scoring.

The images are generated, so the demo model only learns "warm colours engage more".
It shows the whole job on a fresh machine in a couple of minutes; it says nothing
about real creatives. A few generated reels are scored beside the stills, so that the
report shows a video's filmstrip and how its first seconds weigh.
"""

from __future__ import annotations

import csv
import dataclasses
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from scorer.settings import Settings, TrainSettings

NOTE = ("The demo model learned from synthetic images (warm colours were given more likes): "
        "it knows nothing about real creatives.")
SERVE_NOTE = ("Try creatives in a browser: run `scorer serve` (`.venv/bin/scorer serve` in this checkout) "
              "and open http://127.0.0.1:8000/")

# Small enough to train in well under two minutes on 2 CPU cores, offline.
DEMO_TRAINING = TrainSettings(arch="resnet18", pretrained=False, epochs=5, image_size=64, batch_size=16,
                              valid_pct=0.25, learning_rate=0.003)

# Dominant colour family of each class, lowest first, and the likes+comments each was given.
PALETTES = {"Low": (50, 80, 190), "Neutral": (60, 170, 80), "High": (215, 70, 45)}
TOTALS = {"Low": (2500, 6900), "Neutral": (7000, 11000), "High": (11100, 15500)}
_POSTS = 200
_START = datetime(2024, 1, 1, 18, 0, tzinfo=timezone.utc)


def creative(colour: tuple[int, int, int], size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A banner-like image: a jittered colour with a gradient, noise and a few lighter or darker shapes."""
    w, h = size
    base = np.clip(np.array(colour) + rng.integers(-25, 26, 3), 0, 255)
    pixels = np.empty((h, w, 3), np.float32)
    pixels[:] = base
    pixels *= np.linspace(0.85, 1.15, h)[:, None, None]
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(1, 4)):
        cx, cy, r = rng.integers(0, w), rng.integers(0, h), rng.integers(min(w, h) // 8, min(w, h) // 3)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        bar = (abs(xx - cx) < r) & (abs(yy - cy) < r // 2)
        mask = disc if rng.random() < 0.5 else bar
        pixels[mask] *= rng.choice([0.6, 1.35])
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8), "RGB")


def write_posts(folder: Path, n: int = _POSTS, seed: int = 0) -> Path:
    """Generate n past posts in `folder` (images plus posts.csv), a few of them advertised, and return the CSV."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    classes = list(PALETTES)
    rows = []
    for i in range(n):
        name = classes[rng.integers(len(classes))]
        # Colour is not everything: one post in six engages as if it were another colour.
        engaged_as = classes[rng.integers(len(classes))] if rng.random() < 1 / 6 else name
        total = int(rng.integers(*TOTALS[engaged_as]))
        ratio = rng.uniform(0.006, 0.019)
        is_ad = False
        # About one post in seven looks advertised, as the article found: too many likes or an odd comment ratio.
        kind = rng.integers(20)
        if kind == 0:
            total = int(rng.integers(18000, 30000))
        elif kind == 1:
            ratio = rng.choice([0.002, 0.03])
        elif kind == 2:
            is_ad = True
        likes = round(total / (1 + ratio))
        file = f"post-{i:03d}.jpg"
        creative(PALETTES[name], (80, 100), rng).save(folder / file, quality=90)
        posted = _START + timedelta(days=2 * i, hours=int(rng.integers(-3, 4)))
        rows.append({"file": file, "likes": likes, "comments": total - likes, "posted_at": posted.isoformat(),
                     "is_ad": str(is_ad).lower(), "caption": f"{name.lower()} palette #{i}"})
    csv_path = folder / "posts.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return csv_path


def write_creatives(folder: Path, per_palette: int = 4, seed: int = 1) -> list[Path]:
    """Generate new candidate creatives to score, `per_palette` stills of each colour family, and the reels."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = {"Low": "cool-blue", "Neutral": "fresh-green", "High": "warm-red"}
    paths = []
    for label, colour in PALETTES.items():
        for n in range(1, per_palette + 1):
            path = folder / f"{names[label]}-{n}.jpg"
            creative(colour, (320, 400), rng).save(path, quality=90)
            paths.append(path)
    return paths + [write_reel(folder / name, palettes, rng) for name, palettes in REELS.items()]


# The demo's reels: the palette of their first seconds (the hook), then of the rest; the first two swap them.
REELS = {"warm-hook-reel.mp4": ("High", "Low"), "cool-hook-reel.mp4": ("Low", "High"),
         "fresh-green-reel.mp4": ("Neutral", "Neutral")}
_REEL_SIZE = (288, 512)  # 9:16, as Reels and stories are shown
_REEL_FPS = 10
_REEL_SECONDS = (3, 5)  # the hook (video.hook_seconds), then the rest


def write_reel(path: Path, palettes: tuple[str, str], rng: np.random.Generator) -> Path:
    """An 8 s H.264 MP4: a generated picture of the first palette panning through the hook, then one of the second."""
    import av  # only here does the scorer write a video; only the decoding workers read one

    w, h = _REEL_SIZE
    pictures = {label: np.asarray(creative(PALETTES[label], (2 * w, h), rng)) for label in dict.fromkeys(palettes)}
    with av.open(str(path), "w", format="mp4") as box:
        stream = box.add_stream("libx264", rate=_REEL_FPS, options={"preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        shown = [(label, i) for label, seconds in zip(palettes, _REEL_SECONDS, strict=True)
                 for i in range(seconds * _REEL_FPS)]
        for pts, (label, i) in enumerate(shown):
            x = (4 * i) % w  # the camera pans across a picture twice as wide as the frame
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pictures[label][:, x : x + w]), format="rgb24")
            frame.pts = pts
            box.mux(stream.encode(frame))
        box.mux(stream.encode(None))
    return path


@dataclass(frozen=True)
class Demo:
    """The demo's generated data and the settings to train and score it with."""

    settings: Settings
    posts: Path
    creatives: Path

    def trained(self, sha256: str) -> Settings:
        """The settings to score with once the demo learner is trained: training replaced the pinned file, and a
        pin of it in config.yaml now names the new one (`scorer model pin models/demo.pkl` between two demos)."""
        return dataclasses.replace(self.settings, model_sha256=sha256 if self.settings.model_sha256 else None)


def prepare_demo(settings: Settings) -> Demo:
    """Generate the demo's posts and creatives in demo/ beside config.yaml (or in the working folder)."""
    base = settings.source.parent if settings.source else Path.cwd()
    root = base / "demo"
    # Always models/demo.pkl: a demo must never replace the learner that config.yaml points at.
    model = base / "models" / "demo.pkl"
    pin = settings.model_sha256 if settings.model == model else None
    posts = write_posts(root / "posts").parent
    creatives = root / "creatives"
    write_creatives(creatives)
    # The demo's own training settings and the article's rules, whatever config.yaml says: the data is made for them.
    # One thread unless configured: 64-pixel images gain little from more, and on a busy 2-core machine PyTorch
    # with a thread per core was seen to take 90 s instead of 20.
    demo_settings = dataclasses.replace(settings, model=model, model_sha256=pin, classes=None, train=DEMO_TRAINING,
                                        threads=settings.threads or 1)
    return Demo(demo_settings, posts, creatives)
