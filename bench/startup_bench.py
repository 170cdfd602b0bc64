"""What a start costs: `scorer score` opening the learner through fastai, against opening its fast start.

    python bench/startup_bench.py                       # the tests' tiny resnet18, built on the spot
    python bench/startup_bench.py --model models/demo.pkl --runs 5

In one run, on the same creatives (--images of them), each in a fresh process:

1. the first start in a fresh state folder: fastai unpickles the learner, it is exported to
   ONNX and checked, the decode and precision checks are measured, the fast start is kept;
2. --runs starts that open the learner again, its fast start removed first: fastai and
   PyTorch are imported and the learner unpickled (its export, pin and checks are kept), as a
   run that may draw Grad-CAM overlays does, less the overlays;
3. --runs starts that open the pinned export from the fast start without importing fastai
   or PyTorch.

Every run has `report.explain: never`, so the three do the same scoring work.

For each: the median wall time and CPU time (user + system, the process and its children) and
the peak RSS. It prints a Markdown table, with each figure's ratio to the learner's start (2).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.imagegen import CLASS_COLOURS, write_creative  # noqa: E402

# One `scorer score` in a child of this script, so that its CPU time and peak RSS are its own.
RUN = """
import resource, subprocess, sys, time
began = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - began
use = resource.getrusage(resource.RUSAGE_CHILDREN)
if done.returncode:
    sys.exit(done.stderr)
print(wall, use.ru_utime + use.ru_stime, use.ru_maxrss / 1024)
"""


def _start(project: Path, *, forget: bool = False) -> tuple[float, float, float]:
    config = project / "config.yaml"
    config.write_text("model: models/model.pkl\nreport:\n  explain: never\n", encoding="utf-8")
    if forget:
        shutil.rmtree(project / "state" / "serving", ignore_errors=True)
    args = [sys.executable, "-m", "scorer", "score", str(project / "inbox"), "--config", str(config),
            "--out", str(project / "outbox")]
    done = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, cwd=ROOT, check=True)
    wall, cpu, rss = (float(v) for v in done.stdout.split())
    return wall, cpu, rss


def _median(runs: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    return tuple(statistics.median(run[i] for run in runs) for i in range(3))  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="an exported learner (default: the tests' tiny resnet18)")
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "proj"
        for name in ("inbox", "outbox", "models"):
            (project / name).mkdir(parents=True)
        if args.model:
            shutil.copy(args.model, project / "models/model.pkl")
        else:
            from tests.support.learners import build_learner, colour_design

            build_learner(project / "models/model.pkl", colour_design())
        colours = list(CLASS_COLOURS.values())
        for i in range(args.images):
            write_creative(project / "inbox" / f"c{i}.jpg", colours[i % len(colours)], (1080, 1080), seed=i)
        first = _start(project)
        learner = _median([_start(project, forget=True) for _ in range(args.runs)])
        record = _median([_start(project) for _ in range(args.runs)])
    print(f"`scorer score` on {args.images} creatives of 1080×1080, median of {args.runs} starts each "
          "(this machine's figures: compare the ratios)\n")
    print("| start | wall s | CPU s | peak RSS MiB | wall vs learner | CPU vs learner |")
    print("|---|---|---|---|---|---|")
    for name, (wall, cpu, rss) in (("first start (export, checks, record)", first),
                                   ("the learner through fastai", learner), ("the fast start", record)):
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {rss:.0f} | {wall / learner[0]:.2f} | {cpu / learner[1]:.2f} |")


if __name__ == "__main__":
    began = time.perf_counter()
    main()
    print(f"\n({time.perf_counter() - began:.0f} s in all)")
