"""Soak test for `scorer watch`: hours of messy drops, kill -9 and restarts, then an exactly-once audit.

    python bench/soak_watch.py --minutes 10                 # tiny learner trained on the spot
    python bench/soak_watch.py --model models/demo.pkl --minutes 60 --polling --kill-every 30

A producer keeps dropping creatives the way people and sync clients do: bursts, slow
chunked copies, downloads that end as .part and are renamed, broken files, copies of
content already scored, re-drops under a name already used, re-exports that replace
a file under the same name while it may be in a batch, and creatives with a planned-time
sidecar (now and then one whose time cannot be read). Meanwhile the outbox's disk fills
up and frees again (a small tmpfs outbox when this runs as root and may mount one, else a
full disk injected at os.replace), latest.xlsx is held open as Excel on a share does
(EBUSY injected at os.replace), and the service is killed with SIGKILL (now and then
SIGTERM) at random moments and restarted. At the end it drains the inbox and audits: no
creative lost, none scored twice (by content), none archived under another file's result,
every duplicate and broken file listed once, nothing left behind, the service still running.
It exits 1 if any check fails. Not part of the test suite: it runs for as long as you ask.
"""

from __future__ import annotations

import argparse
import collections
import errno
import hashlib
import os
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

from scorer.watch.lease import LEASE_NAME  # noqa: E402
from tests.support.imagegen import CLASS_COLOURS, creative  # noqa: E402
from tests.support.workbooks import column, files_across  # noqa: E402

COLOURS = list(CLASS_COLOURS.values())

# Loaded by the service through PYTHONPATH: faults a share or a full disk would give, switched by flag files.
FAULTS = """
import errno, os
_replace = os.replace
_flags = os.environ["SOAK_FAULTS"]
def _faulty(src, dst, *args, **kwargs):
    name = os.path.basename(os.fspath(dst))
    if name == "latest.xlsx" and os.path.exists(os.path.join(_flags, "latest-open")):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), os.fspath(dst))
    if name.endswith(".xlsx") and os.path.exists(os.path.join(_flags, "disk-full")):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(dst))
    return _replace(src, dst, *args, **kwargs)
os.replace = _faulty
"""


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
        self.sure: set[str] = set()  # SHA-256 of every content that must be scored exactly once
        self.maybe: set[str] = set()  # replaced before or after it was read: scored at most once
        self.replaced: list[str] = []
        self.sidecars: list[str] = []  # good sidecars: each must end up beside its archived creative
        self.count = 0

    def run(self) -> None:
        actions = [self.burst, self.burst, self.slow_copy, self.download, self.broken, self.copy_of_earlier,
                   self.replace_same_name, self.with_sidecar]
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

    def replace_same_name(self) -> None:
        """A marketer re-exports a file under the same name, maybe while its batch is running."""
        name, first = self._new("reexport")
        shutil.copy(self.staging / name, self.inbox / name)
        time.sleep(self.rng.uniform(0.0, 4.0))
        self.count += 1
        tmp = self.staging / f"again-{name}"
        creative(self.rng.choice(COLOURS), (320, 240), seed=self.count).save(tmp, "JPEG", quality=85)
        second = tmp.read_bytes()
        os.replace(tmp, self.inbox / name)  # as an editor saves: a new file under the old name
        self.maybe.add(sha(first))
        self.sure.add(sha(second))
        self.replaced.append(name)

    def with_sidecar(self) -> None:
        """A creative with its planned time and caption in a sidecar dropped just before it; now and then the
        sidecar's time cannot be read (rejected on its own; the creative is still scored)."""
        name, data = self._new("planned")
        stem = name.rsplit(".", 1)[0]
        if self.rng.random() < 0.3:
            (self.inbox / f"{stem}.json").write_text('{"posted_at": "next friday 6pm", "caption": "Sale!"}')
            self.rejected.append(f"{stem}.json")
        else:
            (self.inbox / f"{stem}.txt").write_text("posted_at: 2026-12-03 18:00\nNew colours #spring\n")
            self.sidecars.append(f"{stem}.txt")
        shutil.copy(self.staging / name, self.inbox / name)
        self._expect_scored(name, data)

    def _expect_scored(self, name: str, data: bytes) -> None:
        self.scored.append(name)
        self.sure.add(sha(data))
        # Only content already archived can be re-dropped as a known duplicate; the
        # producer waits a little so that copies land after the original was scored.
        threading.Timer(10.0, self.contents.append, ((name, data),)).start()


def start_service(config: Path, log: Path, faults: Path) -> subprocess.Popen[bytes]:
    """`scorer watch` with its log appended to a file, and the fault switches of FAULTS loaded."""
    env = {**os.environ, "SOAK_FAULTS": str(faults),
           "PYTHONPATH": os.pathsep.join([str(faults), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(log, "ab") as handle:
        return subprocess.Popen([sys.executable, "-m", "scorer", "-v", "watch", "--config", str(config)],
                                stdout=handle, stderr=subprocess.STDOUT, env=env)


class Disk(threading.Thread):
    """Fills the outbox's disk and frees it again; holds latest.xlsx open now and then."""

    def __init__(self, outbox: Path, faults: Path, real: bool, seed: int) -> None:
        super().__init__(daemon=True)
        self.outbox, self.faults, self.real = outbox, faults, real
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.fills = self.holds = 0

    def run(self) -> None:
        while not self.stop.wait(self.rng.uniform(20, 60)):
            if self.rng.random() < 0.5:
                self.fill_for(self.rng.uniform(5, 30))
            else:
                self.hold_latest_for(self.rng.uniform(5, 30))

    def fill_for(self, seconds: float) -> None:
        self.fills += 1
        filler = self.outbox / ".filler"
        if self.real:
            try:
                with open(filler, "wb") as handle:
                    while True:
                        handle.write(b"\0" * 2**20)
                        handle.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
        else:
            (self.faults / "disk-full").touch()
        self.stop.wait(seconds)
        filler.unlink(missing_ok=True)
        (self.faults / "disk-full").unlink(missing_ok=True)

    def hold_latest_for(self, seconds: float) -> None:
        self.holds += 1
        latest = self.outbox / "latest.xlsx"
        flag = self.faults / "latest-open"
        flag.touch()  # a CIFS share refuses to replace a file that Excel holds open: EBUSY
        try:
            with open(latest, "rb"):
                self.stop.wait(seconds)
        except FileNotFoundError:
            self.stop.wait(seconds)
        flag.unlink(missing_ok=True)


def mount_small_outbox(outbox: Path, megabytes: int) -> bool:
    """A tmpfs outbox of its own, so the disk can fill for real; False where mounting is not allowed."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(outbox)],
                          capture_output=True)
    return done.returncode == 0


def _ranking_rows(reports: list[Path]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for report in reports:
        names, shas, places = (column(report, "Ranking", c) for c in ("File", "SHA-256", "Location"))
        rows += [(str(n), str(s), str(p)) for n, s, p in zip(names, shas, places, strict=True)]
    return rows


def audit(outbox: Path, inbox: Path, producer: Producer) -> list[str]:
    """Every check the reports and folders must pass; returns the failures."""
    reports = sorted(outbox.glob("engagement-report-*-batch*.xlsx"))
    failures = []
    rows = _ranking_rows(reports)
    scored = collections.Counter(s for _, s, _ in rows)
    twice = [s for s, n in scored.items() if n > 1]
    lost = producer.sure - set(scored)
    unknown = set(scored) - producer.sure - producer.maybe
    for what, found in (("scored twice", twice), ("lost", lost), ("scored but never dropped", unknown)):
        if found:
            failures.append(f"{len(found)} contents {what}, e.g. {sorted(found)[:3]}")
    swapped = []
    for name, digest, place in rows:
        path = Path(place)
        if path.is_file() and outbox in path.parents and sha(path.read_bytes()) != digest:
            swapped.append(name)
        elif not path.is_file() and digest not in producer.maybe:
            failures.append(f"{name}: scored, but no file at {place}")
    if swapped:
        failures.append(f"{len(swapped)} files archived under another file's result, e.g. {swapped[:3]}")
    plain = set(producer.replaced)
    got = collections.Counter(n for n, _, _ in rows if n not in plain)
    want = collections.Counter(producer.scored)
    if got != want:
        missing, extra = want - got, got - want
        failures.append(f"Ranking: {sum(missing.values())} missing {list(missing)[:5]}, "
                        f"{sum(extra.values())} extra {list(extra)[:5]}")
    for sheet, expected in (("Duplicates", producer.duplicates), ("Rejected", producer.rejected)):
        got = collections.Counter(files_across(reports, sheet))
        want = collections.Counter(expected)
        if got != want:
            missing, extra = want - got, got - want
            failures.append(f"{sheet}: {sum(missing.values())} missing {list(missing)[:5]}, "
                            f"{sum(extra.values())} extra {list(extra)[:5]}")
    beside = {Path(place).parent for name, _, place in rows if name.startswith("planned-")}
    archived = {p.name for folder in beside for p in folder.glob("planned-*.txt")}
    astray = [n for n in producer.sidecars if n not in archived]
    if astray:
        failures.append(f"{len(astray)} sidecars not beside their archived creative, e.g. {astray[:3]}")
    left = [p for p in inbox.rglob("*") if p.is_file() and p.name != LEASE_NAME]
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
    parser.add_argument("--outbox-mb", type=int, default=512, help="size of the tmpfs outbox, when one can be mounted")
    parser.add_argument("--no-mount", action="store_true", help="inject the full disk instead of mounting a tmpfs")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="scorer-soak-"))
    for name in ("inbox", "outbox", "models", "staging", "faults"):
        (work / name).mkdir(parents=True, exist_ok=True)
    os.chmod(work / "models", 0o755)
    (work / "faults" / "sitecustomize.py").write_text(FAULTS)
    real_disk = not args.no_mount and mount_small_outbox(work / "outbox", args.outbox_mb)
    print(f"outbox: {'a real ' + str(args.outbox_mb) + ' MB tmpfs' if real_disk else 'full disk injected'}",
          flush=True)
    if args.model:
        shutil.copy(args.model, work / "models/model.pkl")
    else:
        from tests.support.helpers import train_tiny_learner

        print("training a tiny learner ...", flush=True)
        train_tiny_learner(work / "train", CLASS_COLOURS, work / "models/model.pkl")
    config = work / "config.yaml"
    config.write_text("model: models/model.pkl\nwatch:\n  settle_seconds: 0.5\n  rescan_seconds: 5\n"
                      f"  max_batch: 50\n  max_batch_age: 10\n  polling: {str(args.polling).lower()}\n"
                      "  poll_interval: 0.5\n")
    try:
        return _soak(args, work, config, real_disk)
    finally:
        if real_disk:
            subprocess.run(["umount", "--lazy", str(work / "outbox")], check=False)


def _soak(args: argparse.Namespace, work: Path, config: Path, real_disk: bool) -> int:
    log, faults = work / "service.log", work / "faults"
    rng = random.Random(args.seed)
    producer = Producer(work / "inbox", work / "staging", args.seed)
    disk = Disk(work / "outbox", faults, real_disk, args.seed + 1)
    service = start_service(config, log, faults)
    producer.start()
    disk.start()
    kills = terms = 0
    began = time.monotonic()
    deadline = began + args.minutes * 60
    while time.monotonic() < deadline:
        time.sleep(min(rng.expovariate(1 / args.kill_every), max(0.0, deadline - time.monotonic())))
        if time.monotonic() >= deadline:
            break
        if service.poll() is not None:
            print(f"FAIL: the service stopped on its own with {service.returncode}; see {log}")
            return 1
        sig = signal.SIGTERM if rng.random() < 0.2 else signal.SIGKILL
        service.send_signal(sig)
        terms, kills = terms + (sig == signal.SIGTERM), kills + (sig == signal.SIGKILL)
        try:
            # A SIGTERM during start-up is handled once the model has loaded, which on a busy machine takes a while.
            code = service.wait(120)
        except subprocess.TimeoutExpired:
            print("FAIL: the service did not stop within 120 s of SIGTERM")
            return 1
        # -SIGTERM: the signal came before Python had even imported the service (systemd counts that as a clean stop).
        if code not in (0, -sig):
            print(f"FAIL: the service exited with {code}; see {log}")
            return 1
        service = start_service(config, log, faults)
    producer.stop.set()
    disk.stop.set()
    producer.join()
    disk.join()
    failures = _drain_and_audit(work, config, service, producer)
    minutes = (time.monotonic() - began) / 60
    print(f"{minutes:.1f} min, {kills} kill -9, {terms} SIGTERM, {disk.fills} disk fills, {disk.holds} latest.xlsx "
          f"held open; dropped {len(producer.scored)} creatives, {len(producer.replaced)} same-name replacements, "
          f"{len(producer.duplicates)} duplicates, {len(producer.rejected)} broken files or sidecars, "
          f"{len(producer.sidecars)} good sidecars; log: {log}")
    for failure in failures:
        print("FAIL:", failure)
    if not failures:
        print("OK: 0 lost, 0 scored twice, 0 archived under another file's result, every sidecar beside its "
              "creative, nothing left behind, the service running")
    return 1 if failures else 0


def _drain_and_audit(work: Path, config: Path, service: subprocess.Popen[bytes], producer: Producer) -> list[str]:
    log, faults = work / "service.log", work / "faults"
    # Drain: let the last drops settle, and copies scheduled as duplicates land first.
    quiet_until = time.monotonic() + 180
    while any(p.is_file() and p.name != LEASE_NAME for p in (work / "inbox").rglob("*")) and \
            time.monotonic() < quiet_until:
        time.sleep(1)
    time.sleep(3)
    # A restart writes every report still owed from the ledger before READY, without waiting for its backoff.
    service.send_signal(signal.SIGTERM)
    service.wait(120)
    ready = log.read_text(errors="replace").count("INFO scorer.watch.service: ready:")
    service = start_service(config, log, faults)
    while log.read_text(errors="replace").count("INFO scorer.watch.service: ready:") == ready:
        if service.poll() is not None:
            break
        time.sleep(0.5)
    failures = audit(work / "outbox", work / "inbox", producer)
    if service.poll() is not None:
        failures.append(f"the service is not running at the end (exit {service.returncode})")
    service.send_signal(signal.SIGTERM)
    service.wait(120)
    return failures


if __name__ == "__main__":
    sys.exit(main())
