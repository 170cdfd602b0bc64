"""Benchmark: reels scored through the real engine, beside decoding the very same frames alone (the ceiling).

    python bench/video_bench.py            # 1080×1920 30 fps reels of 15, 30, 45 and 60 s, 3 rounds
    python bench/video_bench.py --quick    # 540×960 reels of 15 and 30 s, 1 round

The reels (tests/support/videogen.py, detail=True) are H.264 with B-frames, a keyframe every 2 s and
some 8 Mbit/s of texture, grain and motion; generating them takes minutes, so they are kept in
--cache and made once. Each length is scored in `--copies` copies, each with bytes of its own (a
trailing `free` box), so that none is a duplicate of another. In interleaved rounds it times:

- scoring: open_engine, as `scorer score` opens it (without Grad-CAM, as for more than
  report.explain_max creatives), on two learners with set weights (resnet18 at 64 px, the kind
  the demo trains, and at 224 px), scoring the whole set: its decoding workers
  (images.decode_workers) sample 16 frames of each reel (8 through the 3 s hook), each made a model
  input, a thumbnail and prints, beside the forward passes in this process;
- the ceiling: as many processes as decoding workers, each seeking and decoding with PyAV alone to
  the very frames the engine sampled, with no colour conversion, resize, thumbnail or print: the
  least decoding that yields those frames;

then each reel scored alone, by its length (the time per reel must not grow with the length
beyond the seeks), and decode_video alone against the ceiling for one reel at a time. It prints
reels/s and sampled frames/s for each, and scoring's share of the ceiling. Compare ratios within
a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import multiprocessing
import os
import statistics
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import av  # noqa: E402

from scorer.config import load_settings  # noqa: E402
from scorer.decoding.decode import ItemGeometry  # noqa: E402
from scorer.decoding.video import decode_video  # noqa: E402
from scorer.decoding.video_probe import VideoLimits  # noqa: E402
from scorer.scoring.assembly import open_engine  # noqa: E402
from scorer.scoring.engine import Engine, Item  # noqa: E402
from tests.support.imagegen import CLASS_COLOURS  # noqa: E402
from tests.support.videogen import Reel, encode  # noqa: E402

GEOMETRY = ItemGeometry("crop", (224, 224))
THUMB_PX = 96
LEARNERS = {"resnet18 64 px": 64, "resnet18 224 px": 224}


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


def copies(reels: dict[int, bytes], count: int, folder: Path) -> dict[Path, int]:
    """Each reel `count` times in `folder`, each copy ending in a `free` box of its own (ISO BMFF's padding, which
    players skip): the same frames in other bytes. Path -> the reel's length."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for seconds, data in reels.items():
        for k in range(count):
            padding = f"copy {k}".encode()
            path = folder / f"reel-{seconds}s-{k}.mp4"
            path.write_bytes(data + struct.pack(">I4s", 8 + len(padding), b"free") + padding)
            paths[path] = seconds
    return paths


def ceiling(source: Path | bytes, times: tuple[float, ...]) -> int:
    """Seek and decode to each time's frame, as little as possible: seek only past a keyframe; frames decoded."""
    with av.open(str(source) if isinstance(source, Path) else io.BytesIO(source), "r") as container:
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


def _ceiling_job(job: tuple[Path, tuple[float, ...]]) -> int:
    return ceiling(*job)


def every_frame(data: bytes) -> tuple[int, float]:
    """Decode every frame (no conversion): how many, and the seconds it took."""
    started = time.perf_counter()
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        count = sum(1 for _ in container.decode(stream))
    return count, time.perf_counter() - started


def open_engines(work: Path) -> dict[str, Engine]:
    """An engine per learner, each built with set weights and opened as `scorer score` opens one."""
    from tests.support.learners import build_learner, colour_design

    engines = {}
    for label, size in LEARNERS.items():
        model = build_learner(work / f"resnet18-{size}.pkl", colour_design(), size=size)
        settings = load_settings(None, model=model, outbox=work / "outbox", state=work / "state")
        # no Grad-CAM: a run of more than report.explain_max creatives draws none (its cost: bench/RESULTS.md)
        settings = dataclasses.replace(settings, report=dataclasses.replace(settings.report, explain="never"))
        engines[label] = open_engine(settings)
    return engines


def score_all(engine: Engine, paths: list[Path]) -> dict[Path, tuple[float, ...]]:
    """Score the reels in one call; each one's sampled times."""
    result = engine.score([Item(path, path.name) for path in paths])
    assert len(result.scored) == len(paths), [r.reason for r in result.rejected]
    return {Path(s.location): tuple(f.time for f in s.video.frames) for s in result.scored if s.video}


def timed(spent: dict[str, list[float]], key: str, run: Callable[[], object]) -> object:
    started = time.perf_counter()
    value = run()
    spent.setdefault(key, []).append(time.perf_counter() - started)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller and fewer reels, one round")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "video-bench-cache",
                        help="where the generated reels are kept between runs")
    parser.add_argument("--copies", type=int, default=2, help="copies of each reel in the scored set")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (3, or 1 with --quick)")
    args = parser.parse_args()
    size, lengths, rounds = ((540, 960), [15, 30], 1) if args.quick else ((1080, 1920), [15, 30, 45, 60], 3)
    rounds = args.rounds or rounds
    reels = make_reels(args.cache, size, lengths)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = copies(reels, args.copies, work / "reels")
        engines = open_engines(work)
        workers = load_settings(None).images.decode_workers
        # spawned, not forked from a process running ONNX Runtime's threads; started before any timing
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            try:
                list(pool.map(_ceiling_job, [(p, (0.0,)) for p in list(paths)[:workers]]))
                spent, times = run_rounds(engines, paths, pool, rounds)
            finally:
                for engine in engines.values():
                    engine.close()
        report(spent, times, paths, reels, size, rounds, workers, engines)


def run_rounds(engines: dict[str, Engine], paths: dict[Path, int], pool: ProcessPoolExecutor,
               rounds: int) -> tuple[dict[str, list[float]], dict[Path, tuple[float, ...]]]:
    """Each round: the ceiling, each engine on the whole set, then each reel alone (one copy per length)."""
    every = list(paths)
    alone = {seconds: path for path, seconds in reversed(paths.items())}  # the first copy of each length
    times = {}
    for engine in engines.values():  # untimed: workers started, PyAV loaded in them, the checks' first creatives
        times = score_all(engine, every)
    spent: dict[str, list[float]] = {}
    limits = VideoLimits()
    for _ in range(rounds):
        timed(spent, "ceiling", lambda: list(pool.map(_ceiling_job, [(p, times[p]) for p in every])))
        for label, engine in engines.items():
            timed(spent, label, lambda engine=engine: score_all(engine, every))
        for seconds, path in alone.items():
            for label, engine in engines.items():
                timed(spent, f"{label} {seconds}", lambda e=engine, p=path: score_all(e, [p]))
            timed(spent, f"ceiling {seconds}", lambda p=path: ceiling(p, times[p]))
            timed(spent, f"decode_video {seconds}",
                  lambda p=path: decode_video(p, GEOMETRY, limits, THUMB_PX))
    return spent, times


def report(spent: dict[str, list[float]], times: dict[Path, tuple[float, ...]], paths: dict[Path, int],
           reels: dict[int, bytes], size: tuple[int, int], rounds: int, workers: int,
           engines: dict[str, Engine]) -> None:
    """The tables: the set scored against the ceiling, then each reel alone by its length."""
    median = {key: statistics.median(values) for key, values in spent.items()}
    frames = sum(len(t) for t in times.values())
    rate = f"{sum(len(d) for d in reels.values()) * 8 / sum(reels) / 1e6:.1f}"
    print(f"\n{len(paths)} reels ({len(reels)} lengths × {len(paths) // len(reels)} copies), {size[0]}×{size[1]} "
          f"30 fps H.264, {rate} Mbit/s, {frames} frames sampled; {workers} decoding workers, {os.cpu_count()} "
          f"cores; {rounds} round(s), medians\n")
    print("| scoring the set | runtime | reels/s | sampled frames/s | share of the ceiling |")
    print("| --- | --- | ---: | ---: | ---: |")
    least = median["ceiling"]
    print(f"| ceiling: PyAV alone to the same frames, {workers} processes | – | {len(paths) / least:.2f} | "
          f"{frames / least:.1f} | 100% |")
    for label, engine in engines.items():
        ours = median[label]
        print(f"| `open_engine`, {label} | {engine.info.runtime} | {len(paths) / ours:.2f} | {frames / ours:.1f} | "
              f"{least / ours:.0%} |")
    print("\n| reel, alone | " + " | ".join(f"{label} s" for label in engines) + " | decode_video s | ceiling s |")
    print("| ---: |" + " ---: |" * (len(engines) + 2))
    for seconds in sorted(reels):
        cells = [median[f"{label} {seconds}"] for label in engines] + [median[f"decode_video {seconds}"],
                                                                       median[f"ceiling {seconds}"]]
        print(f"| {seconds} s | " + " | ".join(f"{value:.2f}" for value in cells) + " |")
    first, last = min(reels), max(reels)
    for label in engines:
        growth = median[f"{label} {last}"] / median[f"{label} {first}"]
        print(f"\n{label}: a {last} s reel alone took {growth:.2f}× the time of a {first} s one "
              f"({last / first:.0f}× the length)", end="")
    count, took = every_frame(reels[first])
    print(f"\nevery frame of the {first} s reel: {count} frames in {took:.2f} s ({count / took:.0f} frames/s)")


if __name__ == "__main__":
    main()
