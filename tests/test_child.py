"""The scorer's child processes: reaped by one thread at a time, a slow child holding up no other thread's reap."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from scorer.child import Reaped


def _most_reaping_at_once(popen: type[subprocess.Popen], monkeypatch: pytest.MonkeyPatch) -> int:  # type: ignore[type-arg]
    """Start four children that end together, wait for each in a thread of its own (two without a timeout,
    two with one), and count the threads inside waitpid at once, each call made to last 20 ms."""
    inside, most, count = 0, 0, threading.Lock()
    real = os.waitpid

    def waitpid(pid: int, flags: int) -> tuple[int, int]:
        nonlocal inside, most
        with count:
            inside += 1
            most = max(most, inside)
        try:
            time.sleep(0.02)
            return real(pid, flags)
        finally:
            with count:
                inside -= 1

    children = [popen([sys.executable, "-c", "import time; time.sleep(0.5)"]) for _ in range(4)]
    monkeypatch.setattr(os, "waitpid", waitpid)
    threads = [threading.Thread(target=child.wait, kwargs={"timeout": 30} if i % 2 else {})
               for i, child in enumerate(children)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    monkeypatch.setattr(os, "waitpid", real)
    assert [child.returncode for child in children] == [0] * 4
    return most


def test_threads_reap_their_children_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _most_reaping_at_once(subprocess.Popen, monkeypatch) > 1, "plain Popen: the threads reap together"
    assert _most_reaping_at_once(Reaped, monkeypatch) == 1


def test_a_child_that_does_not_end_holds_up_no_other_reap() -> None:
    slow = Reaped([sys.executable, "-c", "import time; time.sleep(60)"])
    waiting = threading.Thread(target=slow.wait, daemon=True)
    waiting.start()
    try:
        time.sleep(0.2)  # the thread is in its wait for the slow child
        quick = Reaped([sys.executable, "-c", "pass"])
        started = time.monotonic()
        assert quick.wait(10) == 0
        assert quick.poll() == 0 and slow.poll() is None and waiting.is_alive()
        assert time.monotonic() - started < 5
    finally:
        slow.kill()
        waiting.join(10)
    assert not waiting.is_alive() and slow.returncode == -9
