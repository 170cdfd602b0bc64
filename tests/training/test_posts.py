"""Importing past posts: posts.csv folders and Instaloader profile folders, with every bad row counted and explained."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from instaloader import Instaloader, Profile, load_structure_from_file, save_structure_to_file

from scorer.decoding.vet import ImageLimits
from scorer.errors import DataError
from scorer.training.posts import import_posts
from tests.support.imagegen import write_creative
from tests.support.postgen import TOO_LARGE, legacy_node, post_node, save_post, write_malformed
from tests.support.videogen import reel

LIMITS = ImageLimits()


def _csv(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "posts.csv"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def csv_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "posts"
    for n in range(4):
        write_creative(folder / f"p{n}.jpg", (40 * n, 100, 200), seed=n)
    shutil.copy(folder / "p0.jpg", folder / "copy-of-p0.jpg")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (folder / "notes.txt").write_text("not an image")
    _csv(folder, "\n".join([
        "File,Likes,Comments,posted_at,is_ad,caption,extra column",
        "p0.jpg,8000,80,2024-05-01,false,first,x",
        "p1.jpg,\"12,500\",100,2024-05-02T18:30:00+02:00,TRUE,second,x",
        "p2.jpg,7000,70,,,third,x",
        "p3.jpg,lots,70,2024-05-04,false,,x",
        "missing.jpg,100,1,2024-05-05,false,,x",
        "broken.jpg,100,1,2024-05-06,false,,x",
        "copy-of-p0.jpg,100,1,2024-05-07,false,,x",
        ",100,1,2024-05-08,false,,x",
        "p3.jpg,100,-1,2024-05-09,false,,x",
        "p3.jpg,100,1.5,2024-05-09,false,,x",
        "p3.jpg,100,1,someday,false,,x",
        "p3.jpg,100,1,2024-05-10,maybe,,x",
        "notes.txt,100,1,2024-05-11,false,,x",
    ]) + "\n")
    return folder


def test_csv_rows_are_read_and_every_bad_row_is_reported_with_its_reason(csv_folder: Path) -> None:
    posts = import_posts(csv_folder, LIMITS)
    assert posts.format == "posts.csv"
    table = posts.table
    assert list(table["image"]) == [str(csv_folder / f"p{n}.jpg") for n in range(3)]
    assert list(table["likes"]) == [8000, 12500, 7000]
    assert list(table["comments"]) == [80, 100, 70]
    assert list(table["is_ad"]) == [False, True, False]
    assert list(table["caption"]) == ["first", "second", "third"]
    assert table["posted_at"].iloc[0] == pd.Timestamp("2024-05-01", tz="UTC")
    assert table["posted_at"].iloc[1] == pd.Timestamp("2024-05-02T16:30:00", tz="UTC")
    assert pd.isna(table["posted_at"].iloc[2])
    assert [(b.source, b.reason) for b in posts.bad] == [
        ("posts.csv line 5", "likes is not a number: 'lots'"),
        ("posts.csv line 6", "image missing.jpg not found"),
        ("posts.csv line 7", "image broken.jpg: file is incomplete or corrupt"),
        ("posts.csv line 8", "same image as posts.csv line 2"),
        ("posts.csv line 9", "no file name"),
        ("posts.csv line 10", "comments must be a whole number of at least 0, got '-1'"),
        ("posts.csv line 11", "comments must be a whole number of at least 0, got '1.5'"),
        ("posts.csv line 12", "posted_at is not a date: 'someday' (use 2024-05-31 or 2024-05-31T18:00:00)"),
        ("posts.csv line 13", "is_ad must be true or false, got 'maybe'"),
        ("posts.csv line 14",
         "image notes.txt: not an image (accepted: JPEG, PNG, WEBP): save it in one of these formats"),
    ]
    assert len(table) + len(posts.bad) == 13


def test_the_csv_itself_can_be_given(csv_folder: Path) -> None:
    assert len(import_posts(csv_folder / "posts.csv", LIMITS).table) == 3


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda d: None, "does not exist: give a folder with posts.csv, or an Instaloader profile folder"),
        (lambda d: d.mkdir(), "has neither posts.csv nor Instaloader post metadata"),
        (lambda d: _csv(d, "file,likes\na.jpg,1\n"), "has no column comments: the header needs file, likes, comments"),
        (lambda d: _csv(d, ""), "is not a readable CSV"),
    ],
)
def test_unusable_data_folders_name_the_fix(tmp_path: Path, setup, message: str) -> None:  # type: ignore[no-untyped-def]
    folder = tmp_path / "data"
    setup(folder)
    with pytest.raises(DataError, match=message):
        import_posts(folder, LIMITS)


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    """A profile folder as `instaloader shop` leaves it: posts, a carousel, a profile JSON, a broken file."""
    src = tmp_path / "src"
    images = [write_creative(src / f"{n}.jpg", (30 * n, 90, 160), seed=n) for n in range(6)]
    folder = tmp_path / "shop"
    day = [datetime(2024, 6, d, 9, 15, tzinfo=timezone.utc) for d in range(1, 10)]
    save_post(folder, post_node("A1", day[0], 9000, 90, "linen dress #summer"), [images[0]])
    save_post(folder, post_node("A2", day[1], 12000, 150, sponsored=True), [images[1]], compress=False)
    save_post(folder, post_node("A3", day[2], 5000, 40, slides=2), [images[2], images[3]])
    save_post(folder, legacy_node("A4", day[3], 7000, 70, "from an older instaloader"), [images[4]])
    save_post(folder, post_node("A5", day[4], 100, 1, sponsored=None), [images[5]], compress=False)
    save_post(folder, post_node("A6", day[5], 100, 1), [])
    save_post(folder, post_node("A7", day[6], 100, 1), [images[0]])
    # What else instaloader leaves in a profile folder: the profile itself, comments, a caption file.
    save_structure_to_file(Profile(Instaloader(quiet=True).context, {"username": "shop", "id": "42"}),
                           str(folder / "shop_42.json.xz"))
    (folder / "2024-06-01_09-15-00_UTC_comments.json").write_text("[]")
    (folder / "2024-06-01_09-15-00_UTC.txt").write_text("linen dress #summer")
    (folder / "2024-06-09_09-15-00_UTC.json.xz").write_bytes(b"\xfd7zXZ\x00 truncated")
    return folder


def test_instaloader_folder_reads_like_instaloader_itself(profile: Path) -> None:
    posts = import_posts(profile, LIMITS)
    assert posts.format == "instaloader"
    table = posts.table.set_index("source")
    ok = [f"2024-06-0{d}_09-15-00_UTC.json{x}" for d, x in
          ((1, ".xz"), (2, ""), (3, ".xz"), (4, ".xz"), (5, ""))]
    assert list(table.index) == ok
    context = Instaloader(quiet=True).context
    for source in ok[:4]:
        post = load_structure_from_file(context, str(profile / source))
        row = table.loc[source]
        assert (row.likes, row.comments) == (post.likes, post.comments)
        assert row.posted_at == pd.Timestamp(post.date_utc, tz="UTC")
        assert row.caption == (post.caption or "")
        assert row.is_ad == post.is_sponsored
    assert table.loc[ok[1], "is_ad"]
    assert not table.loc[ok[4], "is_ad"], "a node without sponsor data is not an ad"
    assert table.loc[ok[2], "image"] == str(profile / "2024-06-03_09-15-00_UTC_1.jpg"), "a carousel's first picture"
    assert {(b.source, b.reason) for b in posts.bad} == {
        ("2024-06-06_09-15-00_UTC.json.xz",
         "image not found (expected 2024-06-06_09-15-00_UTC.jpg or 2024-06-06_09-15-00_UTC_1.jpg)"),
        ("2024-06-07_09-15-00_UTC.json.xz", "same image as 2024-06-01_09-15-00_UTC.json.xz"),
        ("2024-06-09_09-15-00_UTC.json.xz", "metadata file is damaged (LZMAError)"),
    }


def test_every_malformed_metadata_file_costs_its_post_alone(profile: Path) -> None:
    node = post_node("M1", datetime(2025, 1, 1, tzinfo=timezone.utc), 100, 1, "spoiled")
    reasons = write_malformed(profile, node, copies=2)
    posts = import_posts(profile, LIMITS)
    assert len(posts.table) == 5, "every good post is still read"
    bad = {b.source: b.reason for b in posts.bad}
    assert {name: bad.get(name) for name in reasons} == reasons
    assert len(bad) == len(reasons) + 3


def test_metadata_is_read_within_a_bound(tmp_path: Path) -> None:
    node = post_node("M1", datetime(2025, 1, 1, tzinfo=timezone.utc), 100, 1, "spoiled")
    write_malformed(tmp_path, node, bomb_mib=64, kinds=["bomb"])
    big = tmp_path / "2025-01-02_00-00-00_UTC.json"
    big.write_text(" " * 4 * 2**20 + json.dumps({"instaloader": {"node_type": "Post"}, "node": node}))
    tracemalloc.start()
    try:
        posts = import_posts(tmp_path, LIMITS)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    bad = {b.source: b.reason for b in posts.bad}
    assert bad["2025-01-01_00-00-00_UTC_bomb_0.json.xz"] == bad[big.name] == TOO_LARGE
    assert peak < 24 * 2**20, f"reading a 64 MiB bomb took {peak / 2**20:.0f} MiB"


def test_hostile_csv_rows_cost_one_row_each(tmp_path: Path) -> None:
    folder = tmp_path / "posts"
    for n in range(2):
        write_creative(folder / f"p{n}.jpg", (40 * n, 100, 200), seed=n)
    long_name = "x" * 300 + ".jpg"
    _csv(folder, "\n".join([
        "file,likes,comments,posted_at,caption",
        "p0.jpg,100000000000000000000,1,,",
        "p0.jpg,nan,1,,",
        "p0.jpg,100,inf,,",
        "p0.jpg,100,1,3000-01-01,",
        "p0.jpg,100,1,2024-05-01,Sale, today only",
        f"{long_name},100,1,,",
        f"p0.jpg,100,1,,\"{'y' * 200_000}\"",
        "p0.jpg,100,1",  # a short row leaves the optional columns empty
        "p1.jpg,200,2,2024-05-02,fine",
    ]) + "\n")
    posts = import_posts(folder, LIMITS)
    assert [(b.source, b.reason) for b in posts.bad] == [
        ("posts.csv line 2", "likes is too large for a count: '100000000000000000000' (at most 1,000,000,000,000)"),
        ("posts.csv line 3", "likes must be a whole number of at least 0, got 'nan'"),
        ("posts.csv line 4", "comments must be a whole number of at least 0, got 'inf'"),
        ("posts.csv line 5", "posted_at must be between 1970 and 2100, got '3000-01-01'"),
        ("posts.csv line 6", "has 6 fields where the header has 5: quote a value that holds a comma"),
        ("posts.csv line 7", f"image {long_name[:40]}… not found"),
        ("posts.csv line 8", "cannot be read as CSV (field larger than field limit (131072))"),
    ]
    assert list(posts.table["source"]) == ["posts.csv line 9", "posts.csv line 10"]


def test_a_date_without_a_time_is_marked(tmp_path: Path) -> None:
    folder = tmp_path / "posts"
    for n in range(3):
        write_creative(folder / f"p{n}.jpg", (40 * n, 100, 200), seed=n)
    _csv(folder, "file,likes,comments,posted_at\np0.jpg,1,1,2026-12-06\np1.jpg,1,1,2026-12-06T10:00\np2.jpg,1,1,\n")
    table = import_posts(folder, LIMITS).table
    assert list(table["date_only"]) == [True, False, False]
    assert table["posted_at"].iloc[0] == pd.Timestamp("2026-12-06", tz="UTC")


def test_train_on_nothing_usable_exits_2_with_one_line(tmp_path: Path) -> None:
    node = post_node("M1", datetime(2025, 1, 1, tzinfo=timezone.utc), 100, 1, "spoiled")
    reasons = write_malformed(tmp_path / "shop", node)
    done = subprocess.run([sys.executable, "-m", "scorer", "train", "shop"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    lines = (done.stdout + done.stderr).splitlines()
    assert [line for line in lines if line.startswith("error: ")] == [
        "error: only 0 posts are left after cleaning (see the funnel): training needs at least 20; add posts, or "
        "relax the rules under 'train.clean' in config.yaml"]
    for name, reason in reasons.items():
        assert sum(f"skipped {name}: {reason}" in line for line in lines) == 1, (name, lines)


@pytest.fixture
def video_profile(tmp_path: Path) -> Path:
    """A profile folder with video posts as Instaloader leaves them: the cover .jpg with the .mp4 beside it, the
    cover alone (--no-videos), the .mp4 alone (--no-video-thumbnails), the XDT typenames, and a carousel."""
    src = tmp_path / "src"
    covers = [write_creative(src / f"{n}.jpg", (30 * n, 90, 160), seed=n) for n in range(8)]
    clip = reel(src / "clip.mp4", [(1.0, (200, 40, 40)), (1.0, (40, 40, 200))], size=(64, 64), fps=5)
    folder = tmp_path / "shop"
    day = [datetime(2024, 6, d, 9, 15, tzinfo=timezone.utc) for d in range(1, 20)]
    save_post(folder, post_node("V1", day[0], 9000, 90, video=True), [covers[0]], video=clip)
    save_post(folder, post_node("V2", day[1], 9000, 90, video=True), [covers[1]])
    save_post(folder, post_node("V3", day[2], 9000, 90, video=True), [], video=clip)
    save_post(folder, {**post_node("V4", day[3], 9000, 90, video=True), "__typename": "XDTGraphVideo"}, [covers[2]])
    save_post(folder, {**post_node("V5", day[4], 9000, 90), "__typename": "XDTGraphImage"}, [covers[3]])
    save_post(folder, {**post_node("V6", day[5], 9000, 90, slides=2), "__typename": "XDTGraphSidecar"},
              [covers[4], clip])
    older = {k: v for k, v in post_node("V7", day[6], 9000, 90, video=True).items() if k != "__typename"}
    save_post(folder, older, [covers[5]])  # no __typename: is_video and product_type say it is a Reel
    return folder


def test_instaloader_video_posts_are_read_with_their_format_cover_and_video(video_profile: Path) -> None:
    posts = import_posts(video_profile, LIMITS)
    assert posts.bad == []
    table = posts.table.set_index("source")
    base = [f"2024-06-0{d}_09-15-00_UTC" for d in range(1, 8)]
    formats = {f"{b}.json.xz": fmt for b, fmt in zip(base, ["video"] * 4 + ["image", "carousel", "video"],
                                                      strict=True)}
    assert table["format"].to_dict() == formats
    assert table["video"].to_dict() == {f"{b}.json.xz": str(video_profile / f"{b}.mp4") if n in (0, 2) else ""
                                        for n, b in enumerate(base)}
    assert table.loc[f"{base[0]}.json.xz", "image"] == str(video_profile / f"{base[0]}.jpg"), "the cover"
    assert table.loc[f"{base[2]}.json.xz", "image"] == str(video_profile / f"{base[2]}.mp4"), "no cover: the video"
    assert table.loc[f"{base[5]}.json.xz", "image"] == str(video_profile / f"{base[5]}_1.jpg"), "the first picture"


@pytest.mark.parametrize(("change", "reason"), [
    ({"__typename": 7}, "metadata file is malformed: __typename is not GraphImage, GraphVideo, GraphSidecar: 7"),
    ({"__typename": "GraphStoryVideo"},
     "metadata file is malformed: __typename is not GraphImage, GraphVideo, GraphSidecar: 'GraphStoryVideo'"),
    ({"is_video": "yes"}, "metadata file is malformed: is_video is not true or false"),
    ({"product_type": ["clips"]}, "metadata file is malformed: product_type is not text"),
    ({"__typename": "GraphImage"}, "metadata file is malformed: __typename is GraphImage, but is_video is true"),
    ({"is_video": False}, "metadata file is malformed: __typename is GraphVideo, but is_video is false"),
    ({"__typename": "GraphSidecar", "is_video": False},
     "metadata file is malformed: __typename is GraphSidecar, but product_type is clips (a Reel)"),
])
def test_a_malformed_format_costs_its_post_alone(video_profile: Path, change: dict, reason: str) -> None:
    node = {**post_node("W1", datetime(2024, 7, 1, tzinfo=timezone.utc), 100, 1, video=True), **change}
    # written by hand: instaloader itself cannot name a file for a typename it does not know
    (video_profile / "2024-07-01_00-00-00_UTC.json").write_text(json.dumps(
        {"node": node, "instaloader": {"node_type": "Post", "version": "4.16"}}))
    write_creative(video_profile / "2024-07-01_00-00-00_UTC.jpg", (1, 2, 3))
    posts = import_posts(video_profile, LIMITS)
    assert [(b.source, b.reason) for b in posts.bad] == [("2024-07-01_00-00-00_UTC.json", reason)]
    assert len(posts.table) == 7


@pytest.mark.parametrize(("spoil", "reason"), [
    (lambda data: data[: len(data) // 2], "video is incomplete or corrupt"),
    (lambda data: b"<html>rate limited</html>", "not a video (MP4, MOV, M4V, WebM or Matroska)"),
])
def test_a_broken_video_costs_its_post_and_names_the_file(video_profile: Path, spoil: Callable[[bytes], bytes],
                                                          reason: str) -> None:
    mp4 = video_profile / "2024-06-01_09-15-00_UTC.mp4"
    mp4.write_bytes(spoil(mp4.read_bytes()))
    posts = import_posts(video_profile, LIMITS)
    assert [(b.source, b.reason) for b in posts.bad] == [
        ("2024-06-01_09-15-00_UTC.json.xz", f"video {mp4.name}: {reason}")]


def test_posts_csv_reads_a_format_column_and_knows_a_video_by_its_content(tmp_path: Path) -> None:
    folder = tmp_path / "posts"
    for n in range(3):
        write_creative(folder / f"p{n}.jpg", (40 * n, 100, 200), seed=n)
    reel(folder / "clip.mp4", [(1.0, (200, 40, 40))], size=(64, 64), fps=5)
    shutil.copy(folder / "clip.mp4", folder / "clip-named.jpg")
    _csv(folder, "\n".join([
        "file,likes,comments,format",
        "p0.jpg,100,1,image",
        "p1.jpg,100,1, Video ",  # a video post whose cover alone is given
        "p2.jpg,100,1,carousel",
        "clip.mp4,100,1,",
        "clip-named.jpg,100,1,reel",
        "clip-named.jpg,100,1,image",
        "clip-named.jpg,100,1,carousel",
    ]) + "\n")
    posts = import_posts(folder, LIMITS)
    assert list(posts.table["format"]) == ["image", "video", "carousel", "video"]
    assert list(posts.table["video"]) == ["", "", "", str(folder / "clip.mp4")]
    assert [(b.source, b.reason) for b in posts.bad] == [
        ("posts.csv line 6", "format must be image, video or carousel, got 'reel'"),
        ("posts.csv line 7", "format is image, but clip-named.jpg is a video: set format to video, or name the "
                             "post's picture"),
        ("posts.csv line 8", "format is carousel, but clip-named.jpg is a video: set format to video, or name the "
                             "post's picture"),
    ]


def test_posts_without_a_format_column_are_images_as_before(csv_folder: Path) -> None:
    table = import_posts(csv_folder, LIMITS).table
    assert list(table["format"]) == ["image"] * 3 and list(table["video"]) == [""] * 3
