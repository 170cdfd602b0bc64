"""Benchmark: decode_video on reels with realistic detail, beside the least decoding that reaches the same frames.

    python bench/video_bench.py            # 1080×1920 30 fps reels of 15, 30, 45 and 60 s, 3 rounds
    python bench/video_bench.py --quick    # 540×960 reels of 15 and 30 s, 1 round

The reels (tests/support/videogen.py, detail=True) are H.264 with B-frames, a keyframe every 2 s and
some 8 Mbit/s of texture, grain and motion; generating them takes minutes, so they are kept in
--cache and made once. For each reel, in interleaved rounds, it times:

- decode_video: probe, sample 16 frames (8 through the 3 s hook), each frame turned into a
  224×224 model input (fastai's Resize, crop) and a 96 px thumbnail, as the decoding workers do;
- the ceiling: PyAV alone, seeking and decoding to the very frames decode_video returned, with
  no colour conversion, resize or thumbnail: the least work that yields those frames;

and, once, decoding every frame of the shortest reel, for scale. It prints reels/s and sampled
frames/s for both, their ratio, and the time per reel against the reel's length, which must not
grow beyond the cost of the seeks. Compare ratios within a run.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402

from scorer.decoding.decode import ItemGeometry  # noqa: E402
from scorer.decoding.video import decode_video  # noqa: E402
from scorer.decoding.video_probe import VideoLimits  # noqa: E402
from tests.support.imagegen import CLASS_COLOURS  # noqa: E402
from tests.support.videogen import Reel, encode  # noqa: E402

GEOMETRY = ItemGeometry("crop", (224, 224))
THUMB_PX = 96


def make_reels(cache: Path, size: tuple[int, int], lengths: list[int]) -> dict[int, bytes]:
    """One reel per length, red for the hook then green and blue, read from the cache or made and kept there."""
    cache.mkdir(parents=True, exist_ok=True)
    reels = {}
    for seconds in lengths:
        path = cache / f"reel-{size[0]}x{size[1]}-{seconds}s.mp4"
        if not path.is_file():
            started = time.perf_counter()
            rest = (seconds - 3) / 2
            spec = Reel(((3.0, CLASS_COLOURS["High"]), (rest, CLASS_COLOURS["Neutral"]), (rest, CLASS_COLOURS["Low"])),
                        size=size, fps=30, detail=True)
            path.write_bytes(encode(spec, "mp4"))
            print(f"made {path.name} in {time.perf_counter() - started:.0f} s", flush=True)
        reels[seconds] = path.read_bytes()
    return reels


def ceiling(data: bytes, times: tuple[float, ...]) -> int:
    """Seek and decode to each time's frame, as little as possible: seek only past a keyframe; frames decoded."""
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        stream.thread_count = 1  # as decode_video decodes: the workers run in parallel instead
        base = stream.time_base
        assert base is not None
        keys = sorted(float(e.timestamp * base) for e in stream.index_entries if e.is_keyframe)
        lead = -keys[0]  # decoding times run this far ahead of the times shown (B-frames)
        frames, decoded, at = container.decode(stream), 0, -1.0
        for target in times:
            if any(at < k + lead <= target for k in keys):
                container.seek(round(target / base), stream=stream)
                frames = container.decode(stream)
            for frame in frames:
                decoded += 1
                at = float(frame.time or 0.0)
                if at >= target - 1e-6:
                    break
    return decoded


def every_frame(data: bytes) -> tuple[int, float]:
    """Decode every frame (no conversion): how many, and the seconds it took."""
    started = time.perf_counter()
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        count = sum(1 for _ in container.decode(stream))
    return count, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller and fewer reels, one round")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "video-bench-cache",
                        help="where the generated reels are kept between runs")
    args = parser.parse_args()
    size, lengths, rounds = ((540, 960), [15, 30], 1) if args.quick else ((1080, 1920), [15, 30, 45, 60], 3)
    reels = make_reels(args.cache, size, lengths)
    limits = VideoLimits()
    decode_video(reels[lengths[0]], GEOMETRY, limits, THUMB_PX)  # warm-up: PyAV and its libraries loaded
    spent: dict[tuple[str, int], list[float]] = {}
    samples: dict[int, tuple[int, int, int]] = {}  # frames sampled, decoded by decode_video, by the ceiling
    for _ in range(rounds):
        for seconds, data in reels.items():
            started = time.perf_counter()
            video = decode_video(data, GEOMETRY, limits, THUMB_PX)
            spent.setdefault(("decode_video", seconds), []).append(time.perf_counter() - started)
            started = time.perf_counter()
            least = ceiling(data, video.times)
            spent.setdefault(("ceiling", seconds), []).append(time.perf_counter() - started)
            samples[seconds] = (len(video.times), video.decoded_frames, least)
    count, whole = every_frame(reels[lengths[0]])
    report(spent, samples, reels, size, rounds, (lengths[0], count, whole))


def report(spent: dict[tuple[str, int], list[float]], samples: dict[int, tuple[int, int, int]],
           reels: dict[int, bytes], size: tuple[int, int], rounds: int, whole: tuple[int, int, float]) -> None:
    """The table: per reel, then in all."""
    median = {key: statistics.median(times) for key, times in spent.items()}
    print(f"\n{len(reels)} reels, {size[0]}×{size[1]} 30 fps H.264, {rounds} round(s); medians\n")
    print("| reel | Mbit/s | frames sampled | decoded: decode_video / ceiling | decode_video ms | ceiling ms "
          "| × ceiling |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for seconds, data in reels.items():
        ours, least = median[("decode_video", seconds)], median[("ceiling", seconds)]
        frames, decoded, ceiling_decoded = samples[seconds]
        print(f"| {seconds} s | {len(data) * 8 / seconds / 1e6:.1f} | {frames} | {decoded} / {ceiling_decoded} | "
              f"{ours * 1000:.0f} | {least * 1000:.0f} | {ours / least:.2f} |")
    ours = sum(median[("decode_video", s)] for s in reels)
    least = sum(median[("ceiling", s)] for s in reels)
    frames = sum(samples[s][0] for s in reels)
    print(f"\ndecode_video: {len(reels) / ours:.2f} reels/s, {frames / ours:.1f} sampled frames/s")
    print(f"ceiling:      {len(reels) / least:.2f} reels/s, {frames / least:.1f} sampled frames/s "
          f"(decode_video at {least / ours:.0%} of it)")
    first, last = min(reels), max(reels)
    growth = median[("decode_video", last)] / median[("decode_video", first)]
    print(f"time per reel, {last} s against {first} s: {growth:.2f}× for {last / first:.0f}× the length")
    seconds, count, took = whole
    print(f"every frame of the {seconds} s reel: {count} frames in {took:.2f} s ({count / took:.0f} frames/s), "
          f"{took / median[('decode_video', seconds)]:.1f}× decode_video's time")


if __name__ == "__main__":
    main()
