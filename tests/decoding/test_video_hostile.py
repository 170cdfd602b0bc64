"""The hostile video corpus end to end: `scorer score`, `scorer watch --once` and the running service account for
every entry, scored or rejected with its reason, within their memory and without hanging, a decoder crash costing
its one file.

The crash is planted in the real decoding workers of a real `scorer` process: a sitecustomize on its
PYTHONPATH (which the workers inherit) swaps decode_video for tests/support/poison.py's, which segfaults on a
name holding 'crash', as FFmpeg would.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from openpyxl import load_workbook

from tests.support.helpers import ROOT, Project, Service, configure, inbox_files, reports, start, wait_until_empty
from tests.support.hostile import Expect
from tests.support.videogen import hostile_videos, reel

CRASH = "crash.mp4"
CRASHED = "the file crashes the video decoder"
GIB = 2**30
POISON = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
import scorer.decoding.video
from tests.support.poison import poison_video_decode
scorer.decoding.video.decode_video = poison_video_decode  # before scorer.decoding.pool takes it as its default
"""
CONFIG = "model: models/tiny.pkl\nreport:\n  explain: never\nvideo:\n  frames: 4\nwatch:\n  settle_seconds: 0.3\n"


def corpus_with_a_crash(folder: Path) -> dict[str, Expect]:
    """videogen.hostile_videos, and a good reel that the planted decoder crashes on."""
    expect = hostile_videos(folder)
    reel(folder / CRASH, [(2.0, (220, 50, 40))])
    return {**expect, CRASH: Expect("rejected", CRASHED)}


def good_only(folder: Path, expect: dict[str, Expect], into: Path) -> None:
    """The corpus's entries that must be scored, alone in `into`: the run to measure the corpus against."""
    into.mkdir(parents=True, exist_ok=True)
    for name, want in expect.items():
        if want.outcome == "scored":
            (into / name).write_bytes((folder / name).read_bytes())


@pytest.fixture
def poisoned(tmp_path: Path) -> dict[str, str]:
    """The environment of a `scorer` process whose decoding workers crash on a video named 'crash'."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(POISON)
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")])}


def run_measured(args: list[str], env: dict[str, str], timeout: float = 120) -> int:
    """Run a command to its end; the peak over its run of its process tree's memory: the sum of each live
    process's VmHWM (its own peak RSS, a high-water mark), polled every 50 ms. Fails if it exits with an error
    or runs past `timeout`. (Its walk of /proc, beside the scorer's two threads that reap a crashed decoding
    worker and the rebuilt latest.xlsx's child together, is how scorer/child.py's Reaped was found to be
    needed.)"""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, text=True, env=env)
        peak, deadline = 0, time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"{' '.join(args[2:4])} still running after {timeout} s: it hangs")
            peak = max(peak, sum(_peak_rss(pid) for pid in _tree(proc.pid)))
            time.sleep(0.05)
        err.seek(0)
        assert proc.returncode == 0, err.read()
    return peak


def _tree(pid: int) -> list[int]:
    """A process and its descendants, as /proc lists them now."""
    found, todo = [], [pid]
    while todo:
        pid = todo.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    todo += [int(child) for child in children.read().split()]
        except OSError:  # gone meanwhile
            continue
    return found


def _peak_rss(pid: int) -> int:
    """A live process's peak resident memory so far, in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return 0


def _sheet(report: Path, name: str) -> dict[str, dict[str, object]]:
    book = load_workbook(report, read_only=True)
    try:
        rows = list(book[name].iter_rows(values_only=True))
    finally:
        book.close()
    return {str(row[rows[0].index("File")]): dict(zip(rows[0], row, strict=True)) for row in rows[1:]}


def check_accounted_for(report: Path, expect: dict[str, Expect]) -> None:
    """Each entry on the Ranking sheet (as a video, or as an image where it is a still) or on the Rejected one
    with its reason, and nothing else."""
    ranking, rejected = _sheet(report, "Ranking"), _sheet(report, "Rejected")
    assert sorted([*ranking, *rejected]) == sorted(expect), (sorted(ranking), sorted(rejected))
    for name, want in expect.items():
        if want.outcome == "scored":
            assert name in ranking, (name, rejected.get(name))
            media = str(ranking[name]["Format"])
            assert media.startswith("video ") if want.text == "video" else media == "image", (name, media)
        else:
            assert want.outcome == "rejected" and name in rejected, (name, want)
            assert want.text in str(rejected[name]["Reason"]), (name, rejected[name]["Reason"])


def _scorer(*args: str) -> list[str]:
    return [sys.executable, "-m", "scorer", *args]


@pytest.mark.slow
def test_score_accounts_for_every_hostile_video_within_a_gib_of_the_good_ones(
        watched: Project, poisoned: dict[str, str], tmp_path: Path) -> None:
    watched.write_config(CONFIG)
    expect = corpus_with_a_crash(tmp_path / "corpus")
    good_only(tmp_path / "corpus", expect, tmp_path / "good")
    baseline = run_measured(_scorer("score", str(tmp_path / "good"), "--config", str(watched.config)), poisoned)
    started = time.monotonic()
    peak = run_measured(_scorer("score", str(tmp_path / "corpus"), "--config", str(watched.config)), poisoned)
    took = time.monotonic() - started
    good_report, report = watched.reports()
    check_accounted_for(good_report, {n: w for n, w in expect.items() if w.outcome == "scored"})
    check_accounted_for(report, expect)
    assert peak <= baseline + GIB, f"peak {peak / 2**20:.0f} MiB against {baseline / 2**20:.0f} MiB for the good"
    print(f"scorer score: the corpus peaked at {peak / 2**20:.0f} MiB, its good files alone at "
          f"{baseline / 2**20:.0f} MiB; {len(expect)} files in {took:.1f} s")


@pytest.mark.slow
def test_watch_once_decides_every_hostile_video_within_a_gib_of_the_good_ones(
        watched: Project, poisoned: dict[str, str], tmp_path: Path) -> None:
    watched.write_config(CONFIG)
    expect = corpus_with_a_crash(watched.inbox)
    good = Project(tmp_path / "good")
    for name in ("models", "state"):  # the tiny learner, its export and fast start
        shutil.copytree(watched.root / name, good.root / name, symlinks=True)
    (good.outbox).mkdir()
    good_only(watched.inbox, expect, good.inbox)
    good.write_config(CONFIG)
    baseline = run_measured(_scorer("watch", "--once", "--config", str(good.config)), poisoned)
    peak = run_measured(_scorer("watch", "--once", "--config", str(watched.config)), poisoned)
    (report,) = reports(watched)
    check_accounted_for(report, expect)
    assert inbox_files(watched) == [], "every file decided is moved out of the inbox"
    rejected = watched.outbox / "rejected"
    for name, want in expect.items():
        if want.outcome == "rejected":
            assert want.text in (rejected / f"{name}.reason.txt").read_text(encoding="utf-8"), name
    (day,) = (watched.outbox / "scored").iterdir()
    assert sorted(p.name for p in day.iterdir()) == sorted(n for n, w in expect.items() if w.outcome == "scored")
    assert peak <= baseline + GIB, f"peak {peak / 2**20:.0f} MiB against {baseline / 2**20:.0f} MiB for the good"
    print(f"scorer watch --once: the corpus peaked at {peak / 2**20:.0f} MiB, its good files alone at "
          f"{baseline / 2**20:.0f} MiB")


@pytest.mark.slow
def test_the_service_scores_on_after_the_corpus_and_a_decoder_crash(
        watched: Project, services: list[Service], poisoned: dict[str, str], tmp_path: Path) -> None:
    configure(watched, settle_seconds=0.3)
    service = start(watched, services, env=poisoned)
    service.wait_message("READY=1")
    expect = corpus_with_a_crash(tmp_path / "corpus")
    for name in expect:  # whole files at once, as a copy that ends in a rename
        os.replace(tmp_path / "corpus" / name, watched.inbox / name)
    wait_until_empty(watched, service)
    reel(tmp_path / "later.mp4", [(2.0, (40, 180, 60))])
    os.replace(tmp_path / "later.mp4", watched.inbox / "later.mp4")
    wait_until_empty(watched, service)
    deadline = time.monotonic() + 30
    while sum(len(_sheet(r, "Ranking")) + len(_sheet(r, "Rejected")) for r in reports(watched)) < len(expect) + 1:
        assert time.monotonic() < deadline and service.proc.poll() is None, service.log
        time.sleep(0.1)
    *batches, last = reports(watched)
    seen = []
    for report in batches:  # the corpus may have settled in more than one batch
        here = [*_sheet(report, "Ranking"), *_sheet(report, "Rejected")]
        check_accounted_for(report, {name: expect[name] for name in here})
        seen += here
    assert sorted(seen) == sorted(expect)
    assert list(_sheet(last, "Ranking")) == ["later.mp4"]
    assert service.proc.poll() is None, f"the service stopped:\n{service.log}"
    assert service.signal(15)[0] == 0
