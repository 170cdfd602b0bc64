"""Benchmark: `scorer outcomes` matching 10,000 posts against 30,000 ledger creatives.

    python bench/outcomes_bench.py             # 10,000 posts x 30,000 creatives
    python bench/outcomes_bench.py --quick     # 1,000 x 3,000, a smoke test

The looks are generated as the ledger keeps them (prints of four views, 1,024 float16 pooled
embedding as resnet18/34 give): a third of the posts are launched creatives (about 6% of their hash
bits flipped, their embedding perturbed), the rest were never scored. It times scorer.outcomes.match
alone (the images' hashes and embedding are made at scoring time, not here) and prints the time, the
peak RSS of this process, and how many posts were matched right and wrongly.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from scorer.decoding.prints import BYTES_PER_PRINT, CROPS
from scorer.outcomes.match import likenesses_of, match

DIMS = 1024


def generate(posts: int, creatives: int, seed: int = 0) -> tuple[list[bytes], list[bytes], list[bytes], list[bytes],
                                                                  np.ndarray]:
    """Prints and embedding of creatives and posts; truth[i] is post i's creative, -1 for a never-scored post."""
    rng = np.random.default_rng(seed)
    size = len(CROPS) * BYTES_PER_PRINT
    c_prints = rng.integers(0, 256, (creatives, size), dtype=np.uint8)
    c_feats = np.abs(rng.normal(0, 1, (creatives, DIMS))).astype(np.float16)
    truth = np.full(posts, -1)
    launched = posts // 3
    truth[:launched] = rng.choice(creatives, launched, replace=False)
    p_prints = rng.integers(0, 256, (posts, size), dtype=np.uint8)
    view = rng.integers(0, len(CROPS), launched)  # the crop Instagram made: the post is close to that view
    for i in range(launched):
        start = view[i] * BYTES_PER_PRINT
        p_prints[i, :BYTES_PER_PRINT] = c_prints[truth[i], start:start + BYTES_PER_PRINT]
    flips = np.unpackbits(p_prints[:launched, :BYTES_PER_PRINT], axis=1) ^ (
        rng.random((launched, 8 * BYTES_PER_PRINT)) < 0.06)
    p_prints[:launched, :BYTES_PER_PRINT] = np.packbits(flips.astype(np.uint8), axis=1)
    p_feats = np.abs(rng.normal(0, 1, (posts, DIMS))).astype(np.float16)
    p_feats[:launched] = (c_feats[truth[:launched]] + rng.normal(0, 0.3, (launched, DIMS))).clip(0).astype(np.float16)
    return ([r.tobytes() for r in c_prints], [r.tobytes() for r in c_feats], [r.tobytes() for r in p_prints],
            [r.tobytes() for r in p_feats], truth)


def main() -> None:
    """Generate, match, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threshold", type=float, default=0.88)
    args = parser.parse_args()
    posts, creatives = (1000, 3000) if args.quick else (10_000, 30_000)
    c_prints, c_feats, p_prints, p_feats, truth = generate(posts, creatives)
    start = time.perf_counter()
    pairs = match(likenesses_of(p_prints, p_feats), likenesses_of(c_prints, c_feats), args.threshold)
    took = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    right = sum(truth[p] == c for p, c, _ in pairs)
    wrong = len(pairs) - right
    print(f"matched {posts:,} posts against {creatives:,} creatives in {took:.1f} s, peak RSS {peak:,.0f} MiB")
    print(f"{right:,} of {int((truth >= 0).sum()):,} launched posts matched right, {wrong:,} matched wrongly")


if __name__ == "__main__":
    main()
