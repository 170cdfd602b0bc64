"""Intake with a real watchdog observer and real files: settling, ignored names, batching, restarts, fallback."""

from __future__ import annotations

import errno
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from scorer.settings import WatchSettings
from scorer.watch.intake import Intake, make_observer

MODES = pytest.mark.parametrize("polling", [False, True], ids=["events", "polling"])


def settings(**overrides: object) -> WatchSettings:
    values: dict[str, object] = dict(settle_seconds=0.4, poll_interval=0.1, rescan_seconds=30.0, max_batch=200,
                                     max_batch_age=60.0)
    values.update(overrides)
    return WatchSettings(**values)  # type: ignore[arg-type]


def collect(intake: Intake, until: Callable[[list[list[Path]]], bool], timeout: float = 10.0,
            consume: bool = True) -> list[list[Path]]:
    """Poll like the service does; each released file is removed, as the service moves it out."""
    batches: list[list[Path]] = []
    deadline = time.monotonic() + timeout
    while not until(batches) and time.monotonic() < deadline:
        batch = intake.poll()
        if batch:
            batches.append(batch)
            for path in batch if consume else []:
                path.unlink()
        time.sleep(0.03)
    return batches


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def started() -> list[Intake]:
    intakes: list[Intake] = []
    yield intakes
    for intake in intakes:
        intake.stop()


def start(inbox: Path, started: list[Intake], **kwargs: object) -> Intake:
    factory = kwargs.pop("observer_factory", make_observer)
    intake = Intake(inbox, settings(**kwargs), observer_factory=factory)  # type: ignore[arg-type]
    intake.start()
    started.append(intake)
    return intake


@MODES
def test_a_slowly_copied_file_is_released_only_once_complete(inbox: Path, started: list[Intake],
                                                              polling: bool) -> None:
    intake = start(inbox, started, polling=polling)
    target = inbox / "banner.jpg"
    chunks = [os.urandom(20_000) for _ in range(8)]
    finished = threading.Event()

    def copy_slowly() -> None:
        with open(target, "wb") as handle:
            for chunk in chunks:
                handle.write(chunk)
                handle.flush()
                time.sleep(0.25)  # shorter than the settle time: the copy looks alive throughout
        finished.set()

    writer = threading.Thread(target=copy_slowly)
    writer.start()
    sizes_at_release: list[int] = []
    deadline = time.monotonic() + 15
    while not sizes_at_release and time.monotonic() < deadline:
        batch = intake.poll()
        if batch:
            assert finished.is_set(), "released while the copy was still being written"
            sizes_at_release.append(batch[0].stat().st_size)
        time.sleep(0.03)
    writer.join()
    assert sizes_at_release == [sum(map(len, chunks))]


@MODES
def test_temporary_and_hidden_names_wait_until_renamed(inbox: Path, started: list[Intake], polling: bool) -> None:
    intake = start(inbox, started, polling=polling)
    for name in ("a.jpg.part", "b.tmp", "c.crdownload", "~$d.jpg", ".e.jpg", ".git/f.jpg"):
        (inbox / name).parent.mkdir(exist_ok=True)
        (inbox / name).write_bytes(b"data")
    assert collect(intake, lambda b: False, timeout=1.5, consume=False) == []
    (inbox / "a.jpg.part").rename(inbox / "a.jpg")
    (inbox / "b.tmp").rename(inbox / "b.png")
    batches = collect(intake, lambda b: bool(b))
    batches += collect(intake, lambda b: False, timeout=1.0)
    assert sorted(p.name for b in batches for p in b) == ["a.jpg", "b.png"], "each renamed file once"


def test_500_files_dropped_at_once_are_released_once_each_in_order(inbox: Path, started: list[Intake]) -> None:
    intake = start(inbox, started, max_batch=200, rescan_seconds=0.5)
    for n in range(500):
        (inbox / f"{n:03}.jpg").write_bytes(b"x" * 100)
    released: list[list[Path]] = []
    mtimes: dict[Path, int] = {}
    deadline = time.monotonic() + 30
    while sum(map(len, released)) < 500 and time.monotonic() < deadline:
        batch = intake.poll()
        if batch:
            released.append(batch)
            for path in batch:
                mtimes[path] = path.stat().st_mtime_ns
                path.unlink()
        time.sleep(0.03)
    released += collect(intake, lambda b: False, timeout=1.5)  # rescans and late events add nothing
    names = [p.name for batch in released for p in batch]
    assert sorted(names) == [f"{n:03}.jpg" for n in range(500)], "every file exactly once"
    assert [len(b) for b in released] == [200, 200, 100]
    for batch in released:
        assert batch == sorted(batch, key=lambda p: (mtimes[p], str(p))), "ordered by mtime, then name"


def test_files_already_there_and_folders_moved_in_are_picked_up(inbox: Path, tmp_path: Path,
                                                                started: list[Intake]) -> None:
    (inbox / "early.jpg").write_bytes(b"x")
    intake = start(inbox, started)
    elsewhere = tmp_path / "campaign"
    (elsewhere / "stories").mkdir(parents=True)
    (elsewhere / "one.jpg").write_bytes(b"1")
    (elsewhere / "stories/two.jpg").write_bytes(b"2")
    elsewhere.rename(inbox / "campaign")
    batches = collect(intake, lambda b: sum(map(len, b)) >= 3)
    names = sorted(p.relative_to(inbox).as_posix() for b in batches for p in b)
    assert names == ["campaign/one.jpg", "campaign/stories/two.jpg", "early.jpg"]


def test_a_batch_closes_when_quiet_when_full_or_when_old(inbox: Path) -> None:
    now = [0.0]
    intake = Intake(inbox, settings(settle_seconds=1.0, rescan_seconds=0.5, max_batch=2, max_batch_age=3.0),
                    observer_factory=make_observer, clock=lambda: now[0])
    for name, mtime in (("c.jpg", 100), ("a.jpg", 200), ("b.jpg", 200)):
        (inbox / name).write_bytes(b"x")
        os.utime(inbox / name, (mtime, mtime))
    intake.start()
    try:
        def at(t: float) -> list[Path] | None:
            now[0] = t
            return intake.poll()

        assert at(0.5) is None, "not settled yet"
        assert at(1.0) == [inbox / "c.jpg", inbox / "a.jpg"], "full: the oldest two, by mtime then name"
        assert at(1.5) is None, "b became ready just now: wait for a quiet settle window"
        assert at(2.0) == [inbox / "b.jpg"], "quiet for the settle window"
        for path in inbox.iterdir():
            path.unlink()
        # A steady trickle never goes quiet: max_batch_age closes the batch.
        released: list[list[Path]] = []
        for step in range(12):
            t = 3.0 + step * 0.5
            (inbox / f"t{step:02}.jpg").write_bytes(b"x")
            batch = at(t)
            if batch:
                released.append(batch)
        assert released and len(released[0]) == 2, "max_batch still applies"
        intake.settings = settings(settle_seconds=1.0, rescan_seconds=0.5, max_batch=50, max_batch_age=3.0)
        for step in range(12, 24):
            (inbox / f"t{step:02}.jpg").write_bytes(b"x")
            batch = at(3.0 + step * 0.5)
            if batch:
                released.append(batch)
        assert len(released[-1]) > 2, "an old batch closes though files keep arriving"
    finally:
        intake.stop()


@MODES
def test_a_dead_observer_is_restarted_when_the_inbox_comes_back(inbox: Path, started: list[Intake],
                                                                 polling: bool) -> None:
    intake = start(inbox, started, polling=polling)
    assert intake.alive
    shutil.rmtree(inbox)  # the share went away
    deadline = time.monotonic() + 5
    while not intake.inbox_missing and time.monotonic() < deadline:
        intake.poll()
        time.sleep(0.05)
    assert intake.inbox_missing and not intake.alive
    inbox.mkdir()
    (inbox / "after.jpg").write_bytes(b"x")
    batches = collect(intake, lambda b: bool(b))
    assert batches == [[inbox / "after.jpg"]] and intake.alive and not intake.inbox_missing
    (inbox / "later.jpg").write_bytes(b"y")
    assert collect(intake, lambda b: bool(b)) == [[inbox / "later.jpg"]], "events flow again"


def test_a_replaced_inbox_folder_is_watched_again(inbox: Path, tmp_path: Path, started: list[Intake]) -> None:
    intake = start(inbox, started)
    inbox.rename(tmp_path / "old-inbox")  # no delete event: only the folder's identity tells
    inbox.mkdir()
    (inbox / "new.jpg").write_bytes(b"x")
    assert collect(intake, lambda b: bool(b)) == [[inbox / "new.jpg"]]
    assert intake.alive


def test_inotify_limits_fall_back_to_polling(inbox: Path, started: list[Intake],
                                             caplog: pytest.LogCaptureFixture) -> None:
    def limited(polling: bool, interval: float):  # type: ignore[no-untyped-def]
        if not polling:
            raise OSError(errno.ENOSPC, "inotify watch limit reached")
        return make_observer(polling, interval)

    with caplog.at_level(logging.ERROR, logger="scorer.watch.intake"):
        intake = start(inbox, started, observer_factory=limited)
    assert intake.polling
    assert "fs.inotify.max_user_watches" in caplog.text
    (inbox / "x.jpg").write_bytes(b"x")
    assert collect(intake, lambda b: bool(b)) == [[inbox / "x.jpg"]]


def test_a_closed_file_still_waits_the_whole_settle_time(inbox: Path, started: list[Intake]) -> None:
    intake = start(inbox, started, settle_seconds=0.6)
    path = inbox / "closed.jpg"
    with open(path, "wb") as handle:
        handle.write(b"x" * 1000)
    closed = time.monotonic()
    batches = collect(intake, lambda b: bool(b))
    assert batches == [[path]]
    # A full settle time for the file (not a quarter of it after the close), then a quiet one for the batch.
    assert time.monotonic() - closed >= 1.15, "a close-write is no reason to cut the quiet spell short"


def test_a_ready_file_written_to_again_is_checked_before_release(inbox: Path, started: list[Intake]) -> None:
    now = [0.0]
    intake = Intake(inbox, settings(settle_seconds=1.0), clock=lambda: now[0])
    intake.start()
    started.append(intake)
    path = inbox / "a.jpg"
    path.write_bytes(b"first part")
    time.sleep(0.3)  # let the observer queue the events
    intake.poll()
    now[0] = 1.1
    assert intake.poll() is None, "settled, waiting for the batch to go quiet"
    with open(path, "ab") as handle:
        handle.write(b" and more")  # the writer came back after the file looked complete
    time.sleep(0.3)
    now[0] = 2.2
    assert intake.poll() is None, "changed since it settled: not released"
    now[0] = 3.3
    intake.poll()
    now[0] = 4.4
    assert intake.poll() == [path]
