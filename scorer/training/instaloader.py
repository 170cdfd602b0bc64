"""Instaloader's metadata files, read as untrusted JSON: a post's counts, date, caption, sponsor, format and files.

A metadata file costs at most its own post. It is opened as a regular file only, inflated to at most
MAX_METADATA bytes, parsed with deep nesting refused, and walked with every type checked; each way it can
be wrong is a DataError whose message is the reason. Nothing here goes to the network.
"""

from __future__ import annotations

import json
import lzma
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from scorer.decoding.vet import is_ignored_name
from scorer.errors import DataError
from scorer.fsutil import open_regular
from scorer.textsafe import log_text

# A post's metadata is a few KB, a carousel's some tens: far more is not a post's, and would only fill memory
# (a 39 KB .json.xz can expand to hundreds of MiB).
MAX_METADATA = 4 * 2**20
_BLOCK = 64 * 1024
TOO_LARGE = f"metadata file holds more than {MAX_METADATA // 2**20} MiB of JSON: a post's is a few KB"
# Instaloader saves pictures with the extension of the server's Content-Type.
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# A post's __typename, as older Instaloader wrote it and as newer Instagram answers (the XDT prefix).
FORMATS = {"GraphImage": "image", "GraphVideo": "video", "GraphSidecar": "carousel"}


@dataclass(frozen=True)
class PostNode:
    """What a post's node says, its values as found (the caller vets counts and the date)."""

    likes: Any
    comments: Any
    stamp: Any
    caption: str
    sponsored: bool
    format: str = "image"  # image, video (a Reel, a clip) or carousel


def metadata_files(folder: Path) -> list[Path]:
    """The *.json and *.json.xz files under a profile folder, in name order, hidden and temporary names left out."""
    return sorted(p for p in folder.rglob("*") if p.name.endswith((".json", ".json.xz")) and not
                  is_ignored_name(p.name) and p.is_file())


def read_metadata(path: Path) -> Any:
    """A metadata file's JSON, or a DataError that says why it cannot be had within MAX_METADATA bytes."""
    try:
        with open_regular(path) as handle:
            data = _inflate(handle) if path.name.endswith(".xz") else handle.read(MAX_METADATA + 1)
        if len(data) > MAX_METADATA:
            raise DataError(TOO_LARGE)
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise DataError("metadata file is nested too deeply to be a post's") from None
    except (EOFError, lzma.LZMAError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise DataError(f"metadata file is damaged ({type(exc).__name__})") from None
    except OSError as exc:
        raise DataError(f"metadata file cannot be read ({exc.strerror or exc})") from None


def _inflate(handle: BinaryIO) -> bytes:
    """An .xz stream decompressed to at most MAX_METADATA + 1 bytes, never more, however far it would expand."""
    unpack = lzma.LZMADecompressor()
    out = bytearray()
    while not unpack.eof and len(out) <= MAX_METADATA:
        block = handle.read(_BLOCK) if unpack.needs_input else b""
        if unpack.needs_input and not block:
            raise EOFError("the compressed stream ends early")
        out += unpack.decompress(block, max_length=MAX_METADATA + 1 - len(out))
    return bytes(out)


def post_node(structure: Any) -> PostNode | None:
    """A post's values from a metadata file's JSON; None for what is not a post (a profile, comments, a story)."""
    if not isinstance(structure, dict) or "instaloader" not in structure:
        return None
    about = _object(structure["instaloader"], "instaloader")
    if about.get("node_type") != "Post":
        return None
    node = _object(structure.get("node"), "node")
    # Read the way instaloader's Post properties do, without their network fallbacks.
    comments = next((count for key in ("edge_media_to_comment", "edge_media_to_parent_comment")
                     if (count := _member(node, key, "count")) is not None), node.get("comments"))
    sponsors = _member(node, "edge_media_to_sponsor_user", "edges")
    if sponsors is not None and not isinstance(sponsors, list):
        raise _malformed("edge_media_to_sponsor_user.edges is not a list")
    return PostNode(likes=_member(node, "edge_media_preview_like", "count"), comments=comments,
                    stamp=node.get("date", node.get("taken_at_timestamp")), caption=_caption(node),
                    sponsored=bool(sponsors), format=_format(node))


def _format(node: dict[str, Any]) -> str:
    """image, video or carousel, by __typename, is_video and product_type (clips: a Reel), which must agree."""
    typename, is_video, product = node.get("__typename"), node.get("is_video"), node.get("product_type")
    if typename is not None and (not isinstance(typename, str) or typename.removeprefix("XDT") not in FORMATS):
        raise _malformed(f"__typename is not {', '.join(FORMATS)}: {_clipped(typename)}")
    if is_video is not None and not isinstance(is_video, bool):
        raise _malformed("is_video is not true or false")
    if product is not None and not isinstance(product, str):
        raise _malformed("product_type is not text")
    video = is_video is True or product == "clips"
    if typename is None:
        return "video" if video else "image"
    found = FORMATS[typename.removeprefix("XDT")]
    if found != "video" and video:
        raise _malformed(f"__typename is {typename}, but " + ("is_video is true" if is_video else
                                                              "product_type is clips (a Reel)"))
    if found == "video" and is_video is False:
        raise _malformed(f"__typename is {typename}, but is_video is false")
    return found


def _clipped(value: Any) -> str:
    text = repr(value)
    return log_text(text if len(text) <= 40 else f"{text[:40]}…")


def _caption(node: dict[str, Any]) -> str:
    edges = _member(node, "edge_media_to_caption", "edges")
    if edges is None or edges == []:
        caption = node.get("caption")
        return caption if isinstance(caption, str) else ""  # the newer node keeps an object here, read above
    if not isinstance(edges, list):
        raise _malformed("edge_media_to_caption.edges is not a list")
    text = _object(_object(edges[0], "edge_media_to_caption.edges[0]").get("node"),
                   "edge_media_to_caption.edges[0].node").get("text")
    if not isinstance(text, str):
        raise _malformed("edge_media_to_caption.edges[0].node.text is not text")
    return text


def _member(node: dict[str, Any], key: str, inner: str) -> Any:
    """node[key][inner], None where either is absent; a DataError where node[key] is there but not an object."""
    value = node.get(key)
    return None if value is None else _object(value, key).get(inner)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _malformed(f"{where} is not an object")
    return value


def _malformed(what: str) -> DataError:
    return DataError(f"metadata file is malformed: {what}")


def picture(folder: Path, stem: str) -> Path | None:
    """A post's picture: <stem>.jpg for a single one or a video's cover, <stem>_1.jpg (the first) for a carousel."""
    candidates = [folder / f"{base}{suffix}" for base in (stem, f"{stem}_1") for suffix in _IMAGE_SUFFIXES]
    return next((c for c in candidates if os.path.lexists(c)), None)


def video_file(folder: Path, stem: str) -> Path | None:
    """A video post's <stem>.mp4 beside its cover, None where it was downloaded with --no-videos."""
    found = folder / f"{stem}.mp4"
    return found if os.path.lexists(found) else None
