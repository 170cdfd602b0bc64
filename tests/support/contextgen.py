"""Synthetic accounts: for the context tests, pictures that say nothing and engagement that follows the hour (or not);
for the format tests, Instaloader downloads with Reels (the .mp4 beside its cover) that engage more (or not)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from scorer.config import load_settings
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.postgen import post_node, save_post, write_rows
from tests.support.videogen import reel

START = datetime(2024, 1, 1, tzinfo=timezone.utc)
#: The hour that carries the signal, and the hours of every other post.
PRIME, OTHER_HOURS = 18, (8, 10, 12, 14, 21)
# One thread and tiny images: these tests share two cores with others.
CONFIG = """model: models/engagement.pkl
threads: 1
train:
  arch: resnet18
  pretrained: false
  epochs: 1
  image_size: 32
  batch_size: 16
  valid_pct: 0.25
  bootstrap: 300
  label:
    method: quantiles
    classes: [Low, High]
"""


def write_account(folder: Path, *, hour_matters: bool, n: int = 160, seed: int = 0) -> Path:
    """`n` posts, every other day, half of them at 18:00, as posts.csv; CONFIG labels the better half High.

    With `hour_matters`, a post at 18:00 gets twice the likes whatever its picture; without,
    a random half of the posts gets twice the likes, whatever their hour.
    """
    rng = np.random.default_rng(seed)
    colours = list(CLASS_COLOURS.values())
    rows = []
    for i in range(n):
        prime = bool(rng.random() < 0.5)
        hour = PRIME if prime else int(rng.choice(OTHER_HOURS))
        doubled = prime if hour_matters else bool(rng.random() < 0.5)
        total = int(rng.integers(4000, 6000)) * (2 if doubled else 1)
        likes = round(total / 1.01)
        name = f"post-{i:03d}.jpg"
        write_creative(folder / name, colours[int(rng.integers(len(colours)))], (32, 32), seed=i)
        posted = START + timedelta(days=2 * i) + timedelta(hours=hour)
        caption = f"look {i} " + "new " * int(rng.integers(0, 12)) + "#shop" + " @friend" * int(rng.integers(0, 2))
        rows.append({"file": name, "likes": likes, "comments": total - likes, "posted_at": posted.isoformat(),
                     "is_ad": "false", "caption": caption})
    return write_rows(folder / "posts.csv", rows)


#: CONFIG with tiny videos: four frames, two of them in a one-second hook.
VIDEO_CONFIG = CONFIG + "video:\n  frames: 4\n  hook_seconds: 1\n"
#: One account's posts in order, nine at a time: five images, three Reels, a carousel.
KINDS = ("image", "video", "image", "video", "image", "carousel", "image", "video", "image")


def write_video_account(folder: Path, *, video_ratio: float, n: int = 72, seed: int = 0) -> Path:
    """An Instaloader profile folder of `n` posts, every other day, in KINDS' order: a Reel's 2-second 64×64 .mp4
    beside its cover .jpg, every sixth Reel with its cover alone (--no-videos); a carousel of two pictures.

    Each post gets 2,000 to 4,000 likes + comments whatever its pictures, a Reel `video_ratio` times as many.
    """
    rng = np.random.default_rng(seed)
    colours = list(CLASS_COLOURS.values())
    media, videos = folder.parent / f"{folder.name}-media", 0
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        total = int(int(rng.integers(2000, 4000)) * (video_ratio if kind == "video" else 1))
        likes = round(total / 1.01)
        first, then = (colours[int(c)] for c in rng.integers(len(colours), size=2))
        pictures = [write_creative(media / f"{i}-{k}.jpg", colour, (32, 32), seed=i) for k, colour in
                    enumerate([first, then][: 2 if kind == "carousel" else 1])]
        clip = None
        if kind == "video":
            videos += 1
            if videos % 6:
                clip = reel(media / f"{i}.mp4", [(1.0, first), (1.0, then)], size=(64, 64), fps=4)
        node = post_node(f"R{i:04d}", START + timedelta(days=2 * i, hours=12), likes, total - likes, f"post {i}",
                         slides=2 if kind == "carousel" else 0, video=kind == "video")
        save_post(folder, node, pictures, video=clip)
    return folder


@dataclass
class Account:
    """A trained synthetic account: its project's config, its model and the model's card."""

    config: Path
    model: Path
    card: dict


def train_account(root: Path, data: Path, config_text: str = CONFIG) -> Account:
    """Train on `data` (posts.csv or Instaloader folder) in a project under `root`."""
    from scorer.training.train import train  # fastai: imported only by the tests that train

    (root / "proj").mkdir(parents=True)
    config = root / "proj" / "config.yaml"
    config.write_text(config_text, encoding="utf-8")
    run = train(load_settings(config), data, progress=False)
    return Account(config, run.model, json.loads(run.card.read_text(encoding="utf-8")))
