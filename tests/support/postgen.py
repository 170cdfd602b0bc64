"""Generated training data: Instaloader profile folders written by instaloader itself, and bad rows for posts.csv.

Instaloader's own `Post`, `format_filename` and `save_structure_to_file` write the files,
so the format under test is the real one; nothing here touches the network.
"""

from __future__ import annotations

import csv
import functools
import json
import lzma
import math
import shutil
from collections.abc import Callable, Collection
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from instaloader import Instaloader, Post, get_json_structure, save_structure_to_file


def media(code: str, taken_at: datetime, likes: int, comments: int, caption: str = "",
          slides: int = 0, video: bool = False) -> dict[str, Any]:
    """A post as Instagram's web API returns it (Polaris media), which instaloader 4.16 normalises; `video`: a Reel."""
    item: dict[str, Any] = {
        "code": code, "pk": str(abs(hash(code)) % 10**12), "media_type": 8 if slides else 2 if video else 1,
        "taken_at": int(taken_at.timestamp()), "user": {"pk": "42", "username": "shop"},
        "image_versions2": {"candidates": [{"url": f"https://example.invalid/{code}.jpg"}]},
        "like_count": likes, "comment_count": comments, "caption": {"text": caption} if caption else None,
        "product_type": "carousel_container" if slides else "clips" if video else "feed",
    }
    if video:
        item["video_versions"] = [{"url": f"https://example.invalid/{code}.mp4"}]
        item["video_duration"] = 2.0
    if slides:
        item["carousel_media"] = [
            {"media_type": 1, "image_versions2": {"candidates": [{"url": f"https://example.invalid/{code}_{i}.jpg"}]}}
            for i in range(slides)
        ]
    return item


def post_node(code: str, taken_at: datetime, likes: int, comments: int, caption: str = "", *,
              slides: int = 0, video: bool = False, sponsored: bool | None = False) -> dict[str, Any]:
    """The node instaloader keeps for a post; `sponsored=None` leaves the sponsor field out, as many nodes do."""
    node = Post._normalize_post_data(media(code, taken_at, likes, comments, caption, slides, video))
    if sponsored is not None:
        node["edge_media_to_sponsor_user"] = {"edges": [{"node": {"sponsor": {"username": "brand"}}}] if sponsored
                                                        else []}
    return node


def legacy_node(code: str, taken_at: datetime, likes: int, comments: int, caption: str = "") -> dict[str, Any]:
    """The older GraphQL node that instaloader wrote before 4.16 (edge_media_to_comment, taken_at_timestamp)."""
    return {
        "__typename": "GraphImage", "shortcode": code, "id": "1", "is_video": False,
        "display_url": f"https://example.invalid/{code}.jpg", "taken_at_timestamp": int(taken_at.timestamp()),
        "edge_media_preview_like": {"count": likes}, "edge_media_to_comment": {"count": comments},
        "edge_media_to_caption": {"edges": [{"node": {"text": caption}}] if caption else []},
        "owner": {"id": "42", "username": "shop"}, "edge_media_to_sponsor_user": {"edges": []},
    }


def save_post(folder: Path, node: dict[str, Any], images: list[Path], *, compress: bool = True,
              video: Path | None = None) -> Path:
    """Write a post as `instaloader <profile>` does: <date>_UTC.json[.xz], its picture(s) (a video's cover) and
    a video post's <date>_UTC.mp4 beside its cover (none, as with --no-videos, when `video` is None); returns the
    JSON path. A carousel's slide given as an .mp4 is saved as <date>_UTC_<n>.mp4."""
    loader = Instaloader(quiet=True)
    post = Post(loader.context, node)
    base = folder / loader.format_filename(post, target="shop")
    folder.mkdir(parents=True, exist_ok=True)
    if str(node.get("__typename", "")).removeprefix("XDT") == "GraphSidecar":
        for number, image in enumerate(images, start=1):
            shutil.copy(image, f"{base}_{number}{image.suffix}")
    elif images:
        shutil.copy(images[0], f"{base}.jpg")
    if video is not None:
        shutil.copy(video, f"{base}.mp4")
    metadata = Path(f"{base}.json.xz" if compress else f"{base}.json")
    save_structure_to_file(post, str(metadata))
    return metadata


def csv_to_instaloader(posts_csv: Path, folder: Path, shuffle_seed: int | None = None) -> Path:
    """Turn a posts.csv folder into an Instaloader profile folder, optionally shuffling likes and comments."""
    with open(posts_csv, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    counts = [(int(r["likes"]), int(r["comments"])) for r in rows]
    if shuffle_seed is not None:
        order = np.random.default_rng(shuffle_seed).permutation(len(counts))
        counts = [counts[i] for i in order]
    for n, (row, (likes, comments)) in enumerate(zip(rows, counts, strict=True)):
        node = post_node(f"C{n:05d}", datetime.fromisoformat(row["posted_at"]), likes, comments, row["caption"],
                         sponsored=row["is_ad"] == "true")
        save_post(folder, node, [posts_csv.parent / row["file"]], compress=n % 2 == 0)
    return folder


def write_rows(posts_csv: Path, rows: list[dict[str, Any]]) -> Path:
    """Write a posts.csv whole: a header from the first row's keys, then every row."""
    with open(posts_csv, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return posts_csv


def append_rows(posts_csv: Path, rows: list[dict[str, str]]) -> None:
    """Add rows to a posts.csv, leaving missing columns empty."""
    with open(posts_csv, encoding="utf-8") as handle:
        header = next(csv.reader(handle))
    with open(posts_csv, "a", newline="", encoding="utf-8") as handle:
        csv.DictWriter(handle, fieldnames=header, restval="").writerows(rows)


TOO_LARGE = "metadata file holds more than 4 MiB of JSON: a post's is a few KB"


# Every kind of malformed Instaloader metadata file: how it is made from a real post's structure (as instaloader
# writes it), its suffix, and the reason import_posts gives for skipping it.
def _replace(path: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def change(structure: dict[str, Any]) -> Any:
        *parents, last = path.split(".")
        inner = structure
        for key in parents:
            inner = inner[key]
        inner[last] = value
        return structure
    return change


MALFORMED: dict[str, tuple[Callable[[dict[str, Any]], Any], str, str]] = {
    "instaloader-text": (_replace("instaloader", "Post"), ".json",
                         "metadata file is malformed: instaloader is not an object"),
    "node-list": (lambda s: {**s, "node": [s["node"]]}, ".json", "metadata file is malformed: node is not an object"),
    "likes-number": (_replace("node.edge_media_preview_like", 5), ".json",
                     "metadata file is malformed: edge_media_preview_like is not an object"),
    "caption-edge-empty": (_replace("node.edge_media_to_caption", {"edges": [{}]}), ".json",
                           "metadata file is malformed: edge_media_to_caption.edges[0].node is not an object"),
    "date-1e20": (_replace("node.date", 1e20), ".json", "date must be a Unix time between 1970 and 2100, got 1e+20"),
    "date-nan": (_replace("node.date", math.nan), ".json", "date must be a Unix time between 1970 and 2100, got nan"),
    "likes-nan": (_replace("node.edge_media_preview_like", {"count": math.nan}), ".json",
                  "likes must be a whole number of at least 0, got nan"),
    "likes-2-64": (_replace("node.edge_media_preview_like", {"count": 2**64}), ".json",
                    "likes is too large for a count: 18446744073709551616 (at most 1,000,000,000,000)"),
    "nested-deeply": (lambda s: NESTED, ".json", "metadata file is nested too deeply to be a post's"),
    "bomb": (lambda s: s, ".json.xz", TOO_LARGE),
}
NESTED = "[" * 100_000 + "]" * 100_000


def write_malformed(folder: Path, node: dict[str, Any], copies: int = 1, bomb_mib: int = 8,
                    kinds: Collection[str] = tuple(MALFORMED)) -> dict[str, str]:
    """`copies` metadata files of each MALFORMED kind, made from `node`'s structure; returns file name -> reason.

    The bomb is the post's JSON after `bomb_mib` MiB of spaces, compressed to some kilobytes.
    """
    folder.mkdir(parents=True, exist_ok=True)
    structure = get_json_structure(Post(Instaloader(quiet=True).context, node))
    reasons = {}
    for kind in kinds:
        make, suffix, reason = MALFORMED[kind]
        made = make(json.loads(json.dumps(structure)))
        text = made if isinstance(made, str) else json.dumps(made)
        content = _bomb(text, bomb_mib) if kind == "bomb" else text.encode()
        for n in range(copies):
            name = f"2025-01-01_00-00-00_UTC_{kind}_{n}{suffix}"
            (folder / name).write_bytes(content)
            reasons[name] = reason
    return reasons


@functools.lru_cache(maxsize=4)
def _bomb(text: str, mib: int) -> bytes:
    packer = lzma.LZMACompressor(preset=1)
    spaces = b" " * 2**20
    parts = [packer.compress(spaces) for _ in range(mib)]
    return b"".join([*parts, packer.compress(text.encode()), packer.flush()])
