"""Does notifying slow intake? A burst of creatives through `scorer watch`, with two slow destinations and with none.

    python bench/notify_bench.py                      # tiny learner trained on the spot, 100 files
    python bench/notify_bench.py --model models/demo.pkl --files 200 --delay 5

Each run starts a fresh `scorer watch` (its ONNX export made once beforehand), waits until it
is ready, drops the burst, and times until every file has left the inbox (scored, reported,
moved). With destinations, each batch's message goes to two json:// receivers on 127.0.0.1
that answer only after --delay seconds (Apprise's read timeout raised above it, so they do take
them). The two set-ups alternate for --rounds rounds (the machine's other load drifts), and the
fastest run of each counts. It prints both throughputs and their ratio; the target is within 10%.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scorer.config import load_settings  # noqa: E402
from scorer.watch.lease import LEASE_NAME  # noqa: E402
from tests.support.imagegen import CLASS_COLOURS, write_creative  # noqa: E402
from tests.support.receivers import JsonReceiver  # noqa: E402

COLOURS = list(CLASS_COLOURS.values())


def prepare(work: Path, model: Path | None) -> Path:
    """A models folder with the learner and its ONNX export, exported once for every run."""
    from scorer.scoring.classifier import Classifier

    (work / "models").mkdir(parents=True)
    if model is None:
        from tests.support.helpers import train_tiny_learner

        train_tiny_learner(work / "train", CLASS_COLOURS, work / "models/model.pkl")
    else:
        shutil.copy(model, work / "models/model.pkl")
    os.chmod(work / "models/model.pkl", 0o644)
    (work / "config.yaml").write_text("model: models/model.pkl\n")
    Classifier(load_settings(work / "config.yaml"))
    return work


def run(base: Path, name: str, files: int, urls: list[str]) -> float:
    """Seconds from dropping the burst until the inbox is empty."""
    root = base / name
    for folder in ("inbox", "outbox"):
        (root / folder).mkdir(parents=True)
    shutil.copytree(base / "models", root / "models")
    shutil.copytree(base / "state", root / "state")
    notify = ""
    if urls:
        (root / "urls").write_text("\n".join(urls) + "\n")
        os.chmod(root / "urls", 0o600)
        notify = f"notify:\n  urls_file: {root / 'urls'}\n"
    (root / "config.yaml").write_text(
        "model: models/model.pkl\nimages:\n  decode: exact\nwatch:\n  settle_seconds: 0.5\n  max_batch: 10\n"
        + notify)
    log = open(root / "watch.log", "w")  # noqa: SIM115 (closed below, after the process)
    proc = subprocess.Popen([sys.executable, "-m", "scorer", "watch", "--config", str(root / "config.yaml")],
                            stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        while "ready:" not in (root / "watch.log").read_text():
            assert proc.poll() is None, (root / "watch.log").read_text()
            time.sleep(0.1)
        began = time.monotonic()
        for n in range(files):
            write_creative(root / "inbox" / f"c{n:04}.jpg", COLOURS[n % 3], (480, 400), seed=n)
        while any(p.name != LEASE_NAME for p in (root / "inbox").iterdir()):
            assert proc.poll() is None, (root / "watch.log").read_text()
            time.sleep(0.05)
        return time.monotonic() - began
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="exported learner; default: train a tiny one now")
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--delay", type=float, default=5.0, help="seconds each destination takes to answer")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each set-up, alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmp:
        base = prepare(Path(tmp), args.model)
        slow = [JsonReceiver(delay=args.delay), JsonReceiver(delay=args.delay)]
        urls = [f"{r.url}?rto={args.delay * 3:g}" for r in slow]
        times: dict[str, list[float]] = {"none": [], "two-slow": []}
        try:
            for n in range(args.rounds):
                for name, chosen in (("none", []), ("two-slow", urls)):
                    times[name].append(run(base, f"{name}-{n}", args.files, chosen))
        finally:
            for receiver in slow:
                receiver.close()
        taken = [len(r.bodies) for r in slow]
    quiet, notified = min(times["none"]), min(times["two-slow"])
    print("seconds per run:", {name: [round(t, 1) for t in runs] for name, runs in times.items()})
    ratio = quiet / notified
    print(f"{args.files} files, no destinations: {args.files / quiet:.1f} files/s ({quiet:.1f} s)")
    print(f"{args.files} files, two destinations answering after {args.delay:g} s: "
          f"{args.files / notified:.1f} files/s ({notified:.1f} s); messages taken so far: {taken}")
    print(f"throughput ratio (with / without): {ratio:.3f} ({'within' if ratio >= 0.9 else 'OUTSIDE'} 10%)")


if __name__ == "__main__":
    main()
