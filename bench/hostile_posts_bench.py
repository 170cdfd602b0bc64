"""Malformed Instaloader metadata mixed into a real download: `scorer train` and `scorer outcomes`, clean and hostile.

    python bench/hostile_posts_bench.py                    # 10,000 malformed files among 60 good posts
    python bench/hostile_posts_bench.py --malformed 1000   # a smoke test

A download of --posts good posts is written by instaloader itself (tests/support/postgen.py), each post a
launched copy of a creative that `scorer watch --once` scored. The hostile download is the same
download with --malformed metadata files more, as many of each malformed kind (tests/support/postgen.py
MALFORMED: wrong types, NaN, 1e20, 2**64, deep nesting, a .json.xz that expands to --bomb-mib MiB).
On each download, in a fresh process: `scorer train` (a small resnet18) and `scorer outcomes`.
It checks that each command exits 0 without a traceback, that each malformed file is listed once
with its file and reason, that the good posts are all still used (the funnel's posts left, the
posts matched), and prints the wall time and peak RSS of each run beside the clean run's.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.outcomegen import as_posted, write_banner  # noqa: E402
from tests.support.postgen import MALFORMED, post_node, save_post, write_malformed  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's scorer
CONFIG = """model: models/bench.pkl
report:
  explain: never
train:
  arch: resnet18
  pretrained: false
  epochs: 1
  image_size: 32
  bootstrap: 200
"""


def run(args: list[str], cwd: Path) -> tuple[str, float, float]:
    """One scorer command in a fresh process: its output, wall seconds and peak RSS (MiB); it must exit 0."""
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "scorer", *args], cwd=cwd, env=ENV, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)  # its own peak RSS (and its decoding workers'), not this script's
    child.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - began
    if child.returncode or "Traceback" in output:
        sys.exit(f"scorer {' '.join(args)} exited {child.returncode}:\n{output[-3000:]}")
    return output, wall, usage.ru_maxrss / 1024


def project(root: Path, posts: int) -> Path:
    """A project whose `scorer watch --once` scored `posts` creatives (with a learner trained here), and the
    clean download: each creative as launched, saved by instaloader."""
    for name in ("inbox", "outbox", "models"):
        (root / name).mkdir(parents=True)
    (root / "config.yaml").write_text(CONFIG, encoding="utf-8")
    download = root / "clean"
    for n in range(posts):
        creative = write_banner(root / "inbox" / f"creative-{n:03}.jpg", n)
        likes = 3000 + (n * 7919) % 12000  # across the three classes, inside train.clean's limits
        taken = datetime.fromtimestamp(time.time() + 86400 * (1 + n % 5), timezone.utc)
        posted = as_posted(creative, root / "up.jpg", n)
        save_post(download, post_node(f"P{n:03}", taken, likes, likes // 100), [posted])
    (root / "up.jpg").unlink()
    return download


def main() -> int:
    """Build both downloads, run both commands on each, check and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=60)
    parser.add_argument("--malformed", type=int, default=10_000)
    parser.add_argument("--bomb-mib", type=int, default=590)
    parser.add_argument("--workdir", type=Path, help="keep everything here instead of a temporary folder")
    args = parser.parse_args()
    root = (args.workdir or Path(tempfile.mkdtemp(prefix="hostile-posts-"))) / "proj"
    clean = project(root, args.posts)
    hostile = root / "hostile"
    shutil.copytree(clean, hostile)
    node = post_node("M1", datetime(2025, 1, 1, tzinfo=timezone.utc), 100, 1, "spoiled")
    reasons = write_malformed(hostile, node, copies=args.malformed // len(MALFORMED), bomb_mib=args.bomb_mib)
    print(f"{args.posts} good posts; {len(reasons):,} malformed metadata files ({len(MALFORMED)} kinds)", flush=True)
    # the clean run trains the model that then scores the creatives; the hostile run trains beside it
    results = {"train clean": run(["train", "clean"], root)}
    results["train hostile"] = run(["train", "hostile", "--out", "models/hostile.pkl"], root)
    run(["watch", "--once"], root)
    for name in ("clean", "hostile"):
        results[f"outcomes {name}"] = run(["outcomes", name], root)
    failures = check(root, results, reasons)
    print("\n| Run | Wall (s) | Peak RSS (MiB) | Over the clean run (MiB) |\n|---|---:|---:|---:|")
    for name, (_, wall, rss) in results.items():
        base = results[name.replace("hostile", "clean")][2]
        print(f"| `scorer {name}` | {wall:.1f} | {rss:.0f} | {rss - base:+.0f} |")
    print(f"\nMachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}.")
    for failure in failures:
        print(f"FAILED: {failure}")
    return 1 if failures else 0


def check(root: Path, results: dict[str, tuple[str, float, float]], reasons: dict[str, str]) -> list[str]:
    """What does not hold: each malformed file listed once with its reason, every good post still used."""
    failures = []
    for command in ("train", "outcomes"):
        lines = results[f"{command} hostile"][0].splitlines()
        listed = [line for line in lines if "skipped " in line]
        missing = [name for name, reason in reasons.items()
                   if sum(line.endswith(f"skipped {name}: {reason}") for line in listed) != 1]
        if missing or len(listed) != len(reasons):
            failures.append(f"scorer {command}: {len(listed)} skipped lines for {len(reasons)} malformed files, "
                            f"{len(missing)} not listed once with their reason (first: {missing[:3]})")
        used = {name: _used(root, command, name, results[f"{command} {name}"][0]) for name in ("clean", "hostile")}
        if used["clean"] != used["hostile"] or not used["clean"]:
            failures.append(f"scorer {command}: good posts used, clean against hostile: {used}")
        print(f"scorer {command}: {len(listed):,} skipped lines; good posts used, clean and hostile: "
              f"{used['clean']} and {used['hostile']}", flush=True)
    return failures


def _used(root: Path, command: str, name: str, output: str) -> str:
    """The good posts that counted: those left after the card's cleaning funnel, or the posts matched."""
    if command == "train":
        card = json.loads((root / "models" / f"{'bench' if name == 'clean' else name}.card.json").read_text())
        return str(card["cleaning"]["funnel"][-1]["left"])
    found = re.search(r"(\d+) posts matched in this download", output)
    return found.group(1) if found else ""


if __name__ == "__main__":
    sys.exit(main())
