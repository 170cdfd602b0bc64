"""Matching a video post to a scored video by its frames' prints: frame by frame, a cover alone, one to one."""

from __future__ import annotations

import numpy as np

from scorer.decoding.prints import BYTES_PER_PRINT, CROPS
from scorer.outcomes.match import likenesses_of, match

FRAMES = 16
THRESHOLD = 0.88
_FRAME = len(CROPS) * BYTES_PER_PRINT


def _video(rng: np.random.Generator, frames: int = FRAMES) -> np.ndarray:
    """A scored creative's prints: per frame, one print per crop (random bits, as unrelated pictures give)."""
    return rng.integers(0, 256, (frames, _FRAME), dtype=np.uint8)


def _launched(rng: np.random.Generator, frames: np.ndarray, flips: float = 0.06) -> np.ndarray:
    """Those frames as a post's prints: the picture as stored (the first crop) with some of its bits flipped by
    the re-encoding, the other crops unrelated (a post is hashed as it is, only its first print counts)."""
    posted = rng.integers(0, 256, frames.shape, dtype=np.uint8)
    bits = np.unpackbits(frames[:, :BYTES_PER_PRINT], axis=1) ^ (rng.random((len(frames), 8 * BYTES_PER_PRINT))
                                                                 < flips)
    posted[:, :BYTES_PER_PRINT] = np.packbits(bits.astype(np.uint8), axis=1)
    return posted


def _pairs(posts: list[np.ndarray], creatives: list[np.ndarray]) -> list[tuple[int, int]]:
    found = match(likenesses_of([p.tobytes() for p in posts], [None] * len(posts)),
                  likenesses_of([c.tobytes() for c in creatives], [None] * len(creatives)), THRESHOLD)
    return sorted((p, c) for p, c, _ in found)


def test_a_reel_is_matched_to_its_video_whatever_keyframes_its_encoder_chose() -> None:
    rng = np.random.default_rng(1)
    reel, other = _video(rng), _video(rng)
    # past the hook, each sample stood in by the keyframe nearest it: some fall on the frame after
    shifted = np.concatenate([reel[:8], reel[9:10], reel[9:13], reel[14:16], reel[15:16]])
    still = reel[:1]  # the reel's cover scored as a still: only one of the post's frames is it
    for frames in (reel, shifted):
        assert _pairs([_launched(rng, frames)], [other, still, reel]) == [(0, 2)]


def test_the_same_shots_in_another_order_are_another_video() -> None:
    rng = np.random.default_rng(5)
    reel = _video(rng)
    variant = np.concatenate([reel[:8], reel[8:][::-1]])  # the same hook, then the rest the other way round
    post = _launched(rng, reel)
    assert _pairs([post], [variant]) == [], "only the hook agrees"
    assert _pairs([post], [variant, reel]) == [(0, 1)]


def test_a_cover_alone_finds_the_frame_it_was_taken_from() -> None:
    rng = np.random.default_rng(2)
    reels = [_video(rng) for _ in range(3)]
    covers = [_launched(rng, reels[1][9:10]), _launched(rng, reels[2][0:1])]  # any frame: the cover people chose
    assert _pairs(covers, reels) == [(0, 1), (1, 2)]


def test_a_reel_sampled_into_fewer_frames_is_compared_with_every_frame() -> None:
    rng = np.random.default_rng(7)
    reel, other = _video(rng), _video(rng)
    fewer = np.delete(reel, [3, 11], axis=0)  # two samples fell on one frame each: the rest shift
    assert _pairs([_launched(rng, fewer)], [other, reel]) == [(0, 1)]


def test_a_still_posted_as_a_reel_is_matched_to_the_still() -> None:
    rng = np.random.default_rng(6)
    still, reel = _video(rng, 1), _video(rng)
    assert _pairs([_launched(rng, np.repeat(still, FRAMES, axis=0))], [reel, still]) == [(0, 1)]


def test_a_reel_that_shares_a_few_frames_with_a_scored_one_is_not_it() -> None:
    rng = np.random.default_rng(3)
    reel = _video(rng)
    same_intro = np.concatenate([reel[:3], _video(rng, FRAMES - 3)])  # the brand's intro card, then another cut
    assert _pairs([_launched(rng, same_intro)], [reel]) == []


def test_many_reels_and_stills_match_one_to_one_across_chunks() -> None:
    rng = np.random.default_rng(4)
    creatives = [_video(rng) if n % 3 else _video(rng, 1) for n in range(90)]
    posted = list(range(0, 90, 2))
    posts = [_launched(rng, creatives[n]) for n in posted] + [_launched(rng, _video(rng)) for _ in range(10)]
    assert sum(len(p) for p in posts) > 256, "precondition: the posts' frames fill several chunks"
    assert _pairs(posts, creatives) == list(enumerate(posted))
