"""`scorer outcomes` on Reels: videos scored by a real `scorer watch`, launched as Instagram does, matched back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from scorer.cli import main
from tests.support.helpers import Project, configure
from tests.support.outcomegen import as_posted, launch_reel, write_banner, write_reel
from tests.support.postgen import post_node, save_post

SIZE = (360, 640)  # a 9:16 reel, small for the test's sake: launched, it is scaled to 240 px wide
DAY = 86400.0


def _watch_once(project: Project) -> None:
    done = subprocess.run([sys.executable, "-m", "scorer", "watch", "--once", "--config", str(project.config)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _outcomes(project: Project, data: Path, record: Path) -> dict[str, Any]:
    result = CliRunner().invoke(main, ["outcomes", str(data), "--config", str(project.config), "--json", str(record)])
    assert result.exit_code == 0, result.output
    found: dict[str, Any] = json.loads(record.read_text(encoding="utf-8"))
    return found


def _post(data: Path, code: str, likes: int, cover: Path, video: Path | None = None, *, reel: bool = True) -> None:
    """A post as `instaloader` saves it: a Reel's metadata (GraphVideo, product_type clips), its cover and its
    video (none, as with --no-videos, when `video` is None), or a picture's. Posted the day after scoring, each
    code at its own minute (Instaloader names a post's files by its time)."""
    taken = datetime.fromtimestamp(time.time() + DAY + 60 * (sum(map(ord, code)) % 600), timezone.utc)
    node = post_node(code, taken, likes, likes // 100, video=reel)
    assert (node["__typename"], node["is_video"], node["product_type"]) == (
        ("GraphVideo", True, "clips") if reel else ("GraphImage", False, "feed"))
    save_post(data, node, [cover], video=video)


@pytest.mark.slow
def test_a_reel_scored_by_watch_and_launched_is_matched_back(watched: Project, tmp_path: Path) -> None:
    configure(watched)
    for seed, name in ((11, "reel-a.mp4"), (12, "reel-b.mp4")):
        write_reel(watched.inbox / name, seed, size=SIZE)
    write_banner(watched.inbox / "still.jpg", 13)
    originals = {name: (watched.inbox / name).read_bytes() for name in ("reel-a.mp4", "reel-b.mp4", "still.jpg")}
    _watch_once(watched)

    # launched: reel A re-encoded smaller at an eighth of the bitrate with its cover; a reel never scored; the still
    launched, data = tmp_path / "launched", tmp_path / "shop"
    (launched / "a.mp4").parent.mkdir()
    (launched / "a.mp4").write_bytes(originals["reel-a.mp4"])
    launch_reel(launched / "a.mp4", launched / "a-posted.mp4", launched / "a-cover.jpg")
    write_reel(launched / "never.mp4", 14, size=SIZE)
    launch_reel(launched / "never.mp4", launched / "never-posted.mp4", launched / "never-cover.jpg")
    (launched / "still.jpg").write_bytes(originals["still.jpg"])
    as_posted(launched / "still.jpg", launched / "still-posted.jpg", seed=1)
    _post(data, "REELA", 9000, launched / "a-cover.jpg", launched / "a-posted.mp4")
    _post(data, "NEVER", 7000, launched / "never-cover.jpg", launched / "never-posted.mp4")
    _post(data, "STILL", 5000, launched / "still-posted.jpg", reel=False)

    record = _outcomes(watched, data, tmp_path / "record.json")
    pairs = {row["creative"]: row for row in record["pairs"]}
    assert sorted(pairs) == ["reel-a.mp4", "still.jpg"], record["pairs"]
    assert pairs["reel-a.mp4"]["format"] == "video" and pairs["still.jpg"]["format"] == "image"
    assert (record["matched"], record["not_posted"], record["unmatched_posts"]) == (2, 1, 1), "reel B, the new reel"
    assert {fmt: figures["matched"] for fmt, figures in record["formats"].items()} == {
        "image": 1, "video": 1}
    assert record["headline"]["Video launches"] == "1 matched, 0 counted: too few for figures yet"

    # the same Reel downloaded with --no-videos: its cover alone (here the frame shown at 1 s) finds it
    covers = tmp_path / "covers"
    launch_reel(launched / "a.mp4", launched / "a-again.mp4", launched / "a-cover-1s.jpg", cover_at=1.0)
    _post(covers, "REELA", 9500, launched / "a-cover-1s.jpg")
    _post(covers, "NEVER", 7000, launched / "never-cover.jpg")
    again = _outcomes(watched, covers, tmp_path / "again.json")
    reel = {row["creative"]: row for row in again["pairs"]}["reel-a.mp4"]
    assert (reel["total"], reel["format"], again["unmatched_posts"]) == (9500 + 95, "video", 1), again["pairs"]
