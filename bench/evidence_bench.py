"""Benchmark: what evidence costs, in one run. Throughput of `scorer score`'s engine without an index, with an
index (kNN look-alikes from the same forward pass), and with the index plus Grad-CAM overlays.

    python bench/evidence_bench.py            # resnet34 at 224 px, 48 creatives, 3 rounds
    python bench/evidence_bench.py --quick    # resnet18 at 64 px, 24 creatives, 2 rounds

It trains a learner briefly on the demo's generated posts with `scorer train` (which also
builds the index), then scores the same creatives three ways with one engine each, in
interleaved rounds, and prints images/s, ms per image and the ratios. Compare ratios within a run.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small model and set, for a smoke test")
    args = parser.parse_args()

    from scorer.config import load_settings
    from scorer.demo import write_creatives, write_posts
    from scorer.evidence.index import index_path
    from scorer.scoring.assembly import open_engine
    from scorer.scoring.engine import Item
    from scorer.training.train import train

    root = Path(tempfile.mkdtemp(prefix="evidence-bench-"))
    arch, size, per, rounds = ("resnet18", 64, 8, 2) if args.quick else ("resnet34", 224, 16, 3)
    config = root / "config.yaml"
    config.write_text(f"model: models/bench.pkl\nstate: state\noutbox: outbox\nthreads: {os.cpu_count()}\n"
                      f"train:\n  arch: {arch}\n  pretrained: false\n  epochs: 1\n  image_size: {size}\n"
                      "  batch_size: 16\n  bootstrap: 100\n")
    (root / "outbox").mkdir()
    posts = write_posts(root / "posts", n=60).parent
    write_creatives(root / "creatives", per_palette=per)
    settings = load_settings(config)
    train(settings, posts, progress=False)
    items = [Item(p, p.name) for p in sorted((root / "creatives").glob("*.jpg"))]
    index = index_path(settings.model)
    hidden = index.with_suffix(".hidden")
    ways = {"no index, no Grad-CAM": ("never", False), "index (kNN evidence), no Grad-CAM": ("never", True),
            "index + Grad-CAM overlays": ("always", True)}
    engines = {}
    for label, (explain, with_index) in ways.items():
        if not with_index:
            index.rename(hidden)
        try:
            look = dataclasses.replace(settings.report, explain=explain)
            engines[label] = open_engine(dataclasses.replace(settings, report=look))
        finally:
            if not with_index:
                hidden.rename(index)
    # Rounds interleave the three ways, and each keeps its best round: a busy machine slows one round, not a way.
    best = dict.fromkeys(ways, float("inf"))
    try:
        for engine in engines.values():
            engine.score(items[:4])  # warm-up: ONNX session and decoders started
        for _ in range(rounds):
            for label, engine in engines.items():
                started = time.perf_counter()
                result = engine.score(items)
                best[label] = min(best[label], (time.perf_counter() - started) / len(items))
                explain, with_index = ways[label]
                assert len(result.scored) == len(items)
                assert all((s.evidence is not None) == with_index for s in result.scored)
                assert all((s.overlay is not None) == (explain == "always") for s in result.scored)
    finally:
        for engine in engines.values():
            engine.close()
    print(f"{arch} at {size} px, {len(items)} creatives, {os.cpu_count()} CPU threads, ONNX Runtime, "
          f"best of {rounds} interleaved rounds")
    for label, seconds in best.items():
        print(f"{label:<34} {1 / seconds:7.1f} images/s  {1000 * seconds:7.1f} ms/image")
    plain, indexed, explained = best.values()
    print(f"evidence index costs {1000 * (indexed - plain):+.1f} ms/image (throughput {plain / indexed:.2f}× plain)")
    print(f"Grad-CAM costs {1000 * (explained - indexed):+.1f} ms/image "
          f"(throughput {indexed / explained:.2f}× indexed)")


if __name__ == "__main__":
    main()
