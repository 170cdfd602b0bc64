"""What more than one test file uses: the project folder, checking tools, a `scorer` command run in this process, a
real `scorer watch` subprocess, the hot folder's settings and files, and the bulk campaign. Fakes are in
tests/support/fakes.py; generators of images, posts, accounts and learners in their own modules (imagegen, postgen,
contextgen, learners, ...)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from scorer.bulk.output import PART_GLOB
from scorer.cli import main
from scorer.config import load_settings
from scorer.decoding.decode import Decoded, ItemGeometry, decode_bytes
from scorer.decoding.vet import ImageLimits
from scorer.ledger.store import Ledger
from scorer.settings import Settings
from scorer.watch.batch import HotFolder
from scorer.watch.lease import LEASE_NAME
from tests.support.imagegen import CLASS_COLOURS, labelled_set, write_creative

if TYPE_CHECKING:
    from fastai.learner import Learner

ROOT = Path(__file__).resolve().parents[2]
RENAMED = {"Low": "bronze", "Neutral": "silver", "High": "gold"}
COLOURS = list(CLASS_COLOURS.values())


# The tools that check what the tests make (LibreOffice, systemd-analyze, Chromium).

def in_ci() -> bool:
    """Whether this is a CI run (CI=true, as CI services set it), where .ci/run has installed every real
    component the tests drive."""
    return os.environ.get("CI", "").lower() == "true"


def _absent(names: tuple[str, ...], package: str, what: str) -> str:
    """What a missing tool leaves unchecked; in CI, where a missing tool is a broken setup, the test fails."""
    message = f"{' or '.join(names)} is not installed, so this was not checked: {what} (apt-get install {package})"
    if in_ci():
        pytest.fail(message, pytrace=False)
    return message


def tool_or_warn(name: str, package: str, what: str) -> str | None:
    """The path of a checking tool, used after a test's own assertions have passed; when it is missing, the
    test fails in CI, and elsewhere passes with a warning that says what went unchecked."""
    path = shutil.which(name)
    if path is None:
        warnings.warn(_absent((name,), package, what), stacklevel=2)
    return path


def tool_or_skip(names: tuple[str, ...], package: str, what: str) -> str:
    """The path of the first of `names` installed, for a test that cannot run without it; when none is, the
    test fails in CI, and elsewhere is skipped with the reason."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.skip(_absent(names, package, what))


# The project folder, and the tiny learner trained as a user's notebook would train it.

@dataclass
class Project:
    """A scorer project folder: config.yaml, inbox/, outbox/, models/ and state/."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def write_config(self, text: str) -> Path:
        self.config.write_text(text, encoding="utf-8")
        return self.config

    def reports(self) -> list[Path]:
        """The outbox's reports, oldest first: a second report in the same second is named -2, -3, ... ."""
        return sorted(self.outbox.glob("engagement-report-*.xlsx"), key=_written_order)


def _written_order(report: Path) -> tuple[str, int, str]:
    found = re.match(r"engagement-report-(\d{8}-\d{6})(?:-(\d+)(?=\.xlsx))?", report.name)
    assert found, report.name
    return found.group(1), int(found.group(2) or 1), report.name


def train_tiny_learner(folder: Path, classes: dict[str, tuple[int, int, int]], out: Path,
                       method: str = "crop") -> Path:
    """Plain fastai, as a user's notebook would do it: train a small resnet18 on colours and export it."""
    import torch
    from fastai.vision.all import ImageDataLoaders, Resize, accuracy, resnet18, set_seed, vision_learner

    items = labelled_set(folder, per_class=16, classes=classes)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a single thread keeps float sums, and so the trained weights, reproducible
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        set_seed(0, reproducible=True)
        dls = ImageDataLoaders.from_lists(
            folder, [p for p, _ in items], [label for _, label in items], valid_pct=0.25, seed=0,
            item_tfms=Resize(32, method=method), bs=8, num_workers=0,
        )
        learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
        learn.fit_one_cycle(10, 5e-3)
        # seeds do not make training reproducible across CPUs: the tests rely on it telling its colours apart,
        # so that is checked, and another CPU's learner gets a few more epochs to get there
        wrong = _misread(learn, items)
        for _ in range(3):
            if not wrong:
                break
            learn.fit(2, 1e-3)
            wrong = _misread(learn, items)
        learn.export(out)
    torch.set_num_threads(threads)
    if wrong:
        pytest.fail(f"precondition not reached: the tiny learner trained here tells {len(wrong)} of its "
                    f"{len(items)} colour images wrong ({', '.join(wrong[:4])})", pytrace=False)
    os.chmod(out, 0o644)
    return out


def _misread(learn: Learner, items: list[tuple[Path, str]]) -> list[str]:
    """The names of the images whose class the learner gets wrong."""
    probs, _ = learn.get_preds(dl=learn.dls.test_dl([p for p, _ in items], num_workers=0))
    return [p.name for (p, label), row in zip(items, probs, strict=True) if learn.dls.vocab[int(row.argmax())] != label]


def after_first_start(source: Path, root: Path) -> None:
    """Copy what a learner's first start left in project `source` into project `root`: the ONNX export beside
    the model, and in the state folder the export's pin and the fast start."""
    for path in [*source.glob("models/*.onnx"), source / "state/derived-pins.json", *source.glob("state/fast-start/*")]:
        place = root / path.relative_to(source)
        place.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, place)



# A `scorer` command in a fresh interpreter, and what it imported: what fails early must fail before the heavy
# libraries load.

@dataclass(frozen=True)
class Imported:
    """A `python -X importtime -m scorer ...` run: its exit status, stdout, stderr without the import-time lines,
    the top-level packages it imported, and how long it took."""

    returncode: int
    stdout: str
    stderr: str
    packages: frozenset[str]
    seconds: float


def scorer_imports(*args: str, cwd: Path) -> Imported:
    began = time.monotonic()
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "scorer", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=120)
    seconds = time.monotonic() - began
    timed = [line for line in proc.stderr.splitlines() if line.startswith("import time:")]
    packages = frozenset(line.rsplit("|", 1)[1].strip().split(".")[0] for line in timed[1:])  # [0] is the header
    rest = "".join(line + "\n" for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    return Imported(proc.returncode, proc.stdout, rest, packages, seconds)


def invoke_scorer(*args: str) -> Result:
    """`scorer ARGS` in this process (click's CliRunner), named `scorer` as on the command line, so that click's
    usage text reads as a user sees it."""
    return CliRunner().invoke(main, list(args), prog_name="scorer")


# A real `scorer watch` subprocess.

def configure(project: Project, **watch: object) -> None:
    # exact decoding: no decode check probation, so every batch costs the same from the first file on; no
    # Grad-CAM (tests/evidence has it), so a service with the tiny learner's fast start starts without fastai
    lines = ["model: models/tiny.pkl", "images:", "  decode_workers: 1", "  decode: exact", "report:",
             "  thumbnail_px: 24", "  explain: never", "watch:"]
    values = {"settle_seconds": 0.4, "rescan_seconds": 2, "max_batch_age": 30, **watch}
    lines += [f"  {key}: {str(value).lower() if isinstance(value, bool) else value}" for key, value in values.items()]
    project.write_config("\n".join(lines) + "\n")


class Service:
    """A `scorer -v watch` subprocess, its log lines and the sd_notify messages it sends."""

    def __init__(self, project: Project, *args: str, watchdog_usec: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.lines: list[tuple[float, str]] = []
        self.messages: list[tuple[float, str]] = []
        name = f"scorer-test-{uuid.uuid4().hex}"
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("\0" + name)  # abstract: NOTIFY_SOCKET starts with '@', as systemd may set it
        self._sock.settimeout(0.2)
        env = {**os.environ, "NOTIFY_SOCKET": "@" + name, "PYTHONUNBUFFERED": "1", **(env or {})}
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scorer", "-v", "watch", "--config", str(project.config), *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=project.root)
        self._threads = [threading.Thread(target=self._read_log, daemon=True),
                         threading.Thread(target=self._read_notify, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append((time.monotonic(), line.rstrip("\n")))

    def _read_notify(self) -> None:
        while self.proc.poll() is None or self._pending():
            try:
                data = self._sock.recv(4096)
            except (TimeoutError, OSError):
                continue
            for message in data.decode().splitlines():
                self.messages.append((time.monotonic(), message))

    def _pending(self) -> bool:
        try:
            self._sock.recv(4096, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            return True
        except OSError:
            return False

    @property
    def log(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_log(self, pattern: str, timeout: float = 90, after: int = 0) -> int:
        """Wait for a log line matching `pattern` (from line `after` on); return its index."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for index, (_, line) in enumerate(self.lines[after:], start=after):
                if regex.search(line):
                    return index
            if self.proc.poll() is not None and not self._threads[0].is_alive():
                break
            time.sleep(0.01)
        raise AssertionError(f"no log line matching {pattern!r}; log:\n{self.log}")

    def wait_message(self, text: str, timeout: float = 90) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for when, message in self.messages:
                if message == text:
                    return when
            time.sleep(0.02)
        raise AssertionError(f"no {text} over NOTIFY_SOCKET; got {self.messages}; log:\n{self.log}")

    def wait_message_matching(self, pattern: str, timeout: float = 90) -> None:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(regex.search(message) for _, message in self.messages):
                return
            time.sleep(0.05)
        raise AssertionError(f"no message matching {pattern!r}; got {self.messages[-5:]}; log:\n{self.log}")

    def signal(self, sig: int, timeout: float = 10) -> tuple[int, float]:
        """Send a signal; return the exit code and how long the exit took."""
        began = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - began

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for thread in self._threads:
            thread.join(5)
        self._sock.close()


def start(project: Project, services: list[Service], *args: str, watchdog_usec: int | None = None,
          env: dict[str, str] | None = None) -> Service:
    service = Service(project, *args, watchdog_usec=watchdog_usec, env=env)
    services.append(service)
    return service


def reports(project: Project) -> list[Path]:
    """The service's batch reports, in batch order (two batches may end in the same second)."""
    return sorted(project.outbox.glob("engagement-report-*-batch*.xlsx"),
                  key=lambda p: int(re.search(r"-batch(\d+)", p.name).group(1)))  # type: ignore[union-attr]


def inbox_files(project: Project) -> list[Path]:
    """Files waiting in the inbox (not the service's lease)."""
    return sorted(p for p in project.inbox.rglob("*") if p.is_file() and p.name != LEASE_NAME)


def wait_until_empty(project: Project, service: Service, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while inbox_files(project) and time.monotonic() < deadline:
        assert service.proc.poll() is None, f"the service died:\n{service.log}"
        time.sleep(0.05)
    assert not inbox_files(project), f"left in the inbox: {inbox_files(project)}\n{service.log}"


# A hot folder in this process (with the fake engine of tests/support/fakes.py).

def hot_settings(root: Path, config: str) -> Settings:
    """Settings whose inbox, outbox and state are fresh folders under `root`, with `config` as config.yaml."""
    for name in ("inbox", "outbox", "state"):
        (root / name).mkdir(exist_ok=True)
    (root / "config.yaml").write_text(config, encoding="utf-8")
    return load_settings(root / "config.yaml")


def restart(settings: Settings, old: Ledger | None = None) -> HotFolder:
    """A new process: reopen the ledger and recover."""
    if old is not None:
        old.close()
    hot = HotFolder(settings, Ledger(settings.state))
    hot.recover()
    return hot


def files_in_inbox(settings: Settings) -> list[Path]:
    """Every file under the inbox of a hot folder's settings."""
    return sorted(p for p in settings.inbox.rglob("*") if p.is_file())


def drop(settings: Settings, names: list[str]) -> None:
    colours = list(CLASS_COLOURS.values())
    for n, name in enumerate(names):
        write_creative(settings.inbox / name, colours[n % 3], (48, 40), seed=n)


def sheet(path: Path, name: str) -> list[str]:
    """The file names a report's sheet lists."""
    from tests.support.workbooks import files_across  # workbooks.py uses tool_or_warn from here

    return files_across([path], name)


# `scorer bulk`'s campaign of creatives, its settings and its Parquet rows.

def bulk_settings(project: Project) -> Settings:
    return load_settings(project.config)


def parquet_rows(dest: Path) -> list[dict[str, object]]:
    return [row for part in sorted(dest.glob(PART_GLOB)) for row in pq.read_table(part).to_pylist()]


def campaign(folder: Path, seeds: range) -> list[Path]:
    return [write_creative(folder / f"{label.lower()}-{n}.jpg", colour, (96, 120), seed=n)
            for label, colour in CLASS_COLOURS.items() for n in seeds]


def gated_decode(gate: Path, data: bytes, modified: float, geometry: ItemGeometry | None, limits: ImageLimits,
                  thumb_px: int) -> Decoded:
    """decode_bytes, except that the content named in `gate` is held back until the gate file is removed."""
    decoded = decode_bytes(data, modified, geometry, limits, thumb_px)
    deadline = time.monotonic() + 120
    while gate.is_file() and gate.read_text() == decoded.sha256 and time.monotonic() < deadline:
        time.sleep(0.05)
    return decoded
