"""Cost per batch against the size of the history: `scorer watch` with 30,000 creatives in its ledger, and with none.

    python bench/latest_bench.py                              # tiny learner trained on the spot
    python bench/latest_bench.py --model models/demo.pkl --history 30000 --burst 1000

For an empty history, then for one of --history synthetic scored creatives (recorded through
the real ledger over the last 20 days, with 96-px thumbnails), in the same run:

1. a real `scorer watch` starts; one file at a time is dropped (renamed into the inbox),
   --singles times, 1.5 s apart, and the time until its batch report appears is taken, less
   the settle time (the median is shown);
2. a burst of --burst files is dropped at once; throughput is files / time until the inbox
   is empty (every file scored, reported and moved);
3. after SIGTERM (which completes latest.xlsx), latest.xlsx is rebuilt alone in a fresh
   process: its wall time and that process's peak RSS. The service's own peak RSS is shown too.

It prints a Markdown table with each figure and its ratio to the empty history.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.history import fill_history, thumbnail  # noqa: E402
from tests.support.imagegen import CLASS_COLOURS, write_creative  # noqa: E402

SETTLE = 0.5
COLOURS = list(CLASS_COLOURS.values())
# ru_maxrss would carry over the high-water mark of this (training) process into the child: read VmHWM.
REBUILD = """
import json, sys, time
from scorer.config import load_settings
from scorer.watch.latest_rebuild import rebuild_latest
from scorer.ledger.store import Ledger
def hwm():
    return next(int(l.split()[1]) / 1024 for l in open("/proc/self/status") if l.startswith("VmHWM:"))
settings = load_settings(sys.argv[1])
ledger = Ledger(settings.state)
info = ledger.batch_model(ledger.last_batch())
before, began = hwm(), time.perf_counter()
rebuild_latest(ledger, settings, info)
print(json.dumps({"seconds": time.perf_counter() - began, "rss_mib": hwm(), "before_mib": before}))
"""


def project(root: Path, model: Path, history: int) -> Path:
    """A project folder with its config, the model and (optionally) a synthetic history in its ledger."""
    for name in ("inbox", "outbox", "state", "models"):
        (root / name).mkdir(parents=True)
    shutil.copy(model, root / "models" / model.name)
    (root / "config.yaml").write_text(f"model: models/{model.name}\nwatch:\n  settle_seconds: {SETTLE}\n")
    if history:
        began = time.perf_counter()
        fill_history(root / "state", history, rejected_every=100, thumb=thumbnail(96))
        print(f"  recorded {history:,} creatives in the ledger in {time.perf_counter() - began:.0f} s", flush=True)
    return root


def reports(root: Path) -> int:
    return len(list((root / "outbox").glob("engagement-report-*-batch*.xlsx")))


def wait(condition, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    """Poll until `condition()`; return the time it became true."""
    deadline = time.perf_counter() + timeout
    while not condition():
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.01)
    return time.perf_counter()


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure(root: Path, staging: Path, singles: int, burst: int) -> dict[str, float]:
    """One service run: single-file latency, burst throughput, then a rebuild of latest.xlsx on its own."""
    log = open(root / "watch.log", "wb")  # noqa: SIM115 - closed below, after the service exits
    command = [sys.executable, "-m", "scorer", "-v", "watch", "--config", str(root / "config.yaml")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    service = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=log, env=env)
    try:
        wait(lambda: "ready:" in (root / "watch.log").read_text(errors="replace"), 300, "the service to start")
        latencies = []
        for n in range(singles):
            single = staging / f"single-{n}.jpg"
            dropped = time.perf_counter()
            os.rename(single, root / "inbox" / single.name)
            latencies.append(wait(lambda n=n: reports(root) > n, 120, "a batch report") - dropped - SETTLE)
            time.sleep(1.5)
        files = sorted((staging / "burst").iterdir())
        dropped = time.perf_counter()
        for path in files:
            os.rename(path, root / "inbox" / path.name)
        done = wait(lambda: not any(os.scandir(root / "inbox")), 1800, "the burst to be scored")
        service_rss = peak_rss_mib(service.pid)
        service.send_signal(signal.SIGTERM)
        service.wait(120)
    finally:
        if service.poll() is None:
            service.kill()
        log.close()
    rebuild = subprocess.run([sys.executable, "-c", REBUILD, str(root / "config.yaml")], capture_output=True,
                             text=True, check=True, cwd=root, env=env)
    figures = json.loads(rebuild.stdout)
    return {"latency": statistics.median(latencies), "throughput": burst / (done - dropped),
            "rebuild": figures["seconds"], "rebuild_rss": figures["rss_mib"], "imports_rss": figures["before_mib"],
            "service_rss": service_rss,
            "latest_mb": (root / "outbox" / "latest.xlsx").stat().st_size / 2**20}


def stage(folder: Path, singles: int, burst: int) -> None:
    """Small distinct JPEGs: the singles, and the burst in its own folder."""
    for n in range(singles):
        write_creative(folder / f"single-{n}.jpg", COLOURS[n % 3], (320, 240), seed=10_000 + n)
    for n in range(burst):
        write_creative(folder / "burst" / f"burst-{n:04}.jpg", COLOURS[n % 3], (320, 240), seed=n)


def table(history: int, empty: dict[str, float], full: dict[str, float]) -> str:
    rows = [
        (f"1-file batch: drop to report, less the {SETTLE} s settle time (median)", "latency", "{:.2f} s"),
        ("burst throughput", "throughput", "{:.1f} files/s"),
        ("rebuild of latest.xlsx alone", "rebuild", "{:.1f} s"),
        ("peak RSS of that rebuild (fresh process)", "rebuild_rss", "{:.0f} MiB"),
        ("RSS of that process before the rebuild (imports)", "imports_rss", "{:.0f} MiB"),
        ("peak RSS of the service (model loaded, whole run)", "service_rss", "{:.0f} MiB"),
        ("latest.xlsx size", "latest_mb", "{:.1f} MB"),
    ]
    lines = [f"| measure | empty history | {history:,} in the history | ratio |", "| --- | ---: | ---: | ---: |"]
    for label, key, fmt in rows:
        lines.append(f"| {label} | {fmt.format(empty[key])} | {fmt.format(full[key])} | "
                     f"{full[key] / empty[key]:.2f}× |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="exported learner; default: train a tiny one now")
    parser.add_argument("--history", type=int, default=30_000, help="scored creatives already in the ledger")
    parser.add_argument("--burst", type=int, default=1000, help="files dropped at once")
    parser.add_argument("--singles", type=int, default=5, help="single files dropped one at a time")
    parser.add_argument("--workdir", type=Path, help="keep everything here instead of a temporary folder")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="latest-bench-"))
    model = args.model
    if model is None:
        from tests.support.helpers import train_tiny_learner

        print("training a tiny learner ...", flush=True)
        model = train_tiny_learner(work / "train", CLASS_COLOURS, work / "tiny.pkl")
    results = {}
    for history in (0, args.history):
        print(f"history of {history:,} creatives:", flush=True)
        staging = work / f"staging-{history}"
        stage(staging, args.singles, args.burst)
        results[history] = measure(project(work / f"project-{history}", model, history), staging, args.singles,
                                   args.burst)
        print(f"  {results[history]}", flush=True)
    print(f"\nMachine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; settle time {SETTLE} s, "
          "watch.latest_rows and watch.latest_interval at their defaults.\n")
    print(table(args.history, results[0], results[args.history]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
