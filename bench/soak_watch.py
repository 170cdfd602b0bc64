"""Soak test for `scorer watch`: hours of messy drops, kill -9 and restarts, then an exactly-once audit.

    python bench/soak_watch.py --minutes 10                 # tiny learner trained on the spot
    python bench/soak_watch.py --model models/demo.pkl --minutes 60 --polling --kill-every 30

A producer keeps dropping creatives the way people and sync clients do: bursts, slow
chunked copies, downloads that end as .part and are renamed, broken files, copies of
content already scored and re-drops under a name already used. Meanwhile the service is
killed with SIGKILL (now and then SIGTERM) at random moments and restarted. At the end it
drains the inbox and checks, from the reports alone, that every creative was scored
exactly once, every duplicate and broken file listed once, and nothing left behind.
It exits 1 if any check fails. Not part of the test suite: it runs for as long as you ask.
"""

from __future__ import annotations

import argparse
import collections
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.imagegen import CLASS_COLOURS, creative  # noqa: E402
from tests.workbooks import files_across  # noqa: E402

COLOURS = list(CLASS_COLOURS.values())


class Producer(threading.Thread):
    """Drops files into the inbox and remembers what each report should say about them."""

    def __init__(self, inbox: Path, staging: Path, seed: int) -> None:
        super().__init__(daemon=True)
        self.inbox, self.staging = inbox, staging
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.scored: list[str] = []
        self.duplicates: list[str] = []
        self.rejected: list[str] = []
        self.contents: list[tuple[str, bytes]] = []  # (name, bytes) of creatives that will be scored
        self.count = 0

    def run(self) -> None:
        actions = [self.burst, self.burst, self.slow_copy, self.download, self.broken, self.copy_of_earlier]
        while not self.stop.is_set():
            self.rng.choice(actions)()
            self.stop.wait(self.rng.uniform(0.2, 3.0))

    def _new(self, prefix: str, size: tuple[int, int] = (320, 240)) -> tuple[str, bytes]:
        self.count += 1
        name = f"{prefix}-{self.count:06}.jpg"
        path = self.staging / name
        creative(self.rng.choice(COLOURS), size, seed=self.count).save(path, "JPEG", quality=90)
        return name, path.read_bytes()

    def burst(self) -> None:
        sub = self.rng.choice(["", "", "campaign-a/", "campaign-b/stories/"])
        for _ in range(self.rng.randint(1, 60)):
            name, data = self._new("burst")
            target = self.inbox / sub / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.staging / name, target)
            self._expect_scored(f"{sub}{name}", data)

    def slow_copy(self) -> None:
        name, data = self._new("slow", (1600, 1200))
        with open(self.inbox / name, "wb") as handle:
            step = max(1, len(data) // 8)
            for start in range(0, len(data), step):
                handle.write(data[start:start + step])
                handle.flush()
                time.sleep(0.2)
        self._expect_scored(name, data)

    def download(self) -> None:
        name, data = self._new("download")
        part = self.inbox / f"{name}.part"
        part.write_bytes(data)
        time.sleep(self.rng.uniform(0.5, 3.0))
        part.rename(self.inbox / name)
        self._expect_scored(name, data)

    def broken(self) -> None:
        self.count += 1
        name = f"broken-{self.count:06}.jpg"
        (self.inbox / name).write_bytes(b"\xff\xd8\xff\xe0" + self.rng.randbytes(200))
        self.rejected.append(name)

    def copy_of_earlier(self) -> None:
        if not self.contents:
            return
        original, data = self.rng.choice(self.contents)
        self.count += 1
        # Either a new name, or the very name it had (a re-drop after it was archived).
        name = f"copy-{self.count:06}.jpg" if self.rng.random() < 0.5 else original
        if (self.inbox / name).exists():
            return
        (self.inbox / name).parent.mkdir(parents=True, exist_ok=True)
        (self.inbox / name).write_bytes(data)
        self.duplicates.append(name)

    def _expect_scored(self, name: str, data: bytes) -> None:
        self.scored.append(name)
        # Only content already archived can be re-dropped as a known duplicate; the
        # producer waits a little so that copies land after the original was scored.
        threading.Timer(10.0, self.contents.append, ((name, data),)).start()


def start_service(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`scorer watch` with its log appended to a file."""
    with open(log, "ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "scorer", "-v", "watch", "--config", str(config)],
                                stdout=handle, stderr=subprocess.STDOUT)


def audit(outbox: Path, inbox: Path, producer: Producer) -> list[str]:
    """Every check the reports and folders must pass; returns the failures."""
    reports = sorted(outbox.glob("engagement-report-*-batch*.xlsx"))
    failures = []
    for sheet, expected in (("Ranking", producer.scored), ("Duplicates", producer.duplicates),
                            ("Rejected", producer.rejected)):
        got = collections.Counter(files_across(reports, sheet))
        want = collections.Counter(expected)
        if got != want:
            missing, extra = want - got, got - want
            failures.append(f"{sheet}: {sum(missing.values())} missing {list(missing)[:5]}, "
                            f"{sum(extra.values())} extra {list(extra)[:5]}")
    left = [p for p in inbox.rglob("*") if p.is_file()]
    if left:
        failures.append(f"{len(left)} files left in the inbox, e.g. {left[:3]}")
    temps = list(outbox.rglob(".~*"))
    if temps:
        failures.append(f"temporary files left: {temps[:3]}")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="exported learner; default: train a tiny one now")
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to keep dropping files")
    parser.add_argument("--kill-every", type=float, default=20.0, help="mean seconds between kills")
    parser.add_argument("--polling", action="store_true", help="run the service with watch.polling: true")
    parser.add_argument("--workdir", type=Path, help="keep everything here instead of a temporary folder")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="scorer-soak-"))
    for name in ("inbox", "outbox", "models", "staging"):
        (work / name).mkdir(parents=True, exist_ok=True)
    if args.model:
        shutil.copy(args.model, work / "models/model.pkl")
    else:
        from tests.conftest import train_tiny_learner

        print("training a tiny learner ...", flush=True)
        train_tiny_learner(work / "train", CLASS_COLOURS, work / "models/model.pkl")
    config = work / "config.yaml"
    config.write_text("model: models/model.pkl\nwatch:\n  settle_seconds: 0.5\n  rescan_seconds: 5\n"
                      f"  max_batch: 50\n  max_batch_age: 10\n  polling: {str(args.polling).lower()}\n"
                      "  poll_interval: 0.5\n")
    log = work / "service.log"
    rng = random.Random(args.seed)
    producer = Producer(work / "inbox", work / "staging", args.seed)
    service = start_service(config, log)
    producer.start()
    kills = terms = 0
    began = time.monotonic()
    deadline = began + args.minutes * 60
    while time.monotonic() < deadline:
        time.sleep(min(rng.expovariate(1 / args.kill_every), max(0.0, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            break
        if rng.random() < 0.2:
            service.send_signal(signal.SIGTERM)
            terms += 1
        else:
            service.send_signal(signal.SIGKILL)
            kills += 1
        try:
            code = service.wait(30)
        except subprocess.TimeoutExpired:
            print("FAIL: the service did not stop within 30 s of SIGTERM")
            return 1
        if code not in (0, -signal.SIGKILL):
            print(f"FAIL: the service exited with {code}; see {log}")
            return 1
        service = start_service(config, log)
    producer.stop.set()
    producer.join()
    # Drain: let the last drops settle, and copies scheduled as duplicates land first.
    quiet_until = time.monotonic() + 120
    while any(p.is_file() for p in (work / "inbox").rglob("*")) and time.monotonic() < quiet_until:
        time.sleep(1)
    time.sleep(3)
    service.send_signal(signal.SIGTERM)
    service.wait(30)
    failures = audit(work / "outbox", work / "inbox", producer)
    minutes = (time.monotonic() - began) / 60
    print(f"{minutes:.1f} min, {kills} kill -9, {terms} SIGTERM; dropped {len(producer.scored)} creatives, "
          f"{len(producer.duplicates)} duplicates, {len(producer.rejected)} broken files; log: {log}")
    for failure in failures:
        print("FAIL:", failure)
    if not failures:
        print("OK: every creative exactly once, nothing lost, nothing left behind")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
