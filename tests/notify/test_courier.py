"""Every send has a deadline that really ends it, and says why a destination failed: `scorer notify test` for real.

`scorer notify test` runs as a subprocess, as an operator runs it, so a thread left waiting on a destination
would keep it from exiting; its destinations are real receivers on 127.0.0.1.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

from tests.support.receivers import JsonReceiver, TrickleReceiver, free_port, json_url, notify_section

TIMEOUT_S = 2


def notify_test(root: Path, urls: list[str], *options: str, **notify: object) -> tuple[subprocess.CompletedProcess[str],
                                                                                       float]:
    (root / "config.yaml").write_text(notify_section(root, urls, **notify))
    began = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "scorer", *options, "notify", "test", "--config",
                          str(root / "config.yaml")], capture_output=True, text=True, timeout=60, cwd=root)
    return run, time.monotonic() - began


def test_notify_test_gives_each_failure_its_cause_and_returns_within_the_deadline(tmp_path: Path) -> None:
    good, broken, refusing, trickle = JsonReceiver(), JsonReceiver(status=500), JsonReceiver(status=401), \
        TrickleReceiver()
    urls = [good.url, broken.url, refusing.url, json_url(free_port()), trickle.url]
    try:
        run, took = notify_test(tmp_path, urls, timeout_seconds=TIMEOUT_S)
    finally:
        for receiver in (good, broken, refusing, trickle):
            receiver.close()
    assert run.returncode == 1, run.stderr
    assert run.stdout.splitlines() == [
        "destination 1 (json://***): ok",
        "destination 2 (json://***): failed: HTTP 500",
        "destination 3 (json://***): failed: HTTP 401",
        "destination 4 (json://***): failed: connection refused",
        f"destination 5 (json://***): failed: no answer within {TIMEOUT_S} s (notify.timeout_seconds)",
    ]
    # each destination is tried at once, each with notify.timeout_seconds: a few seconds more start the command
    assert took < TIMEOUT_S + 8, f"took {took:.1f} s"
    assert len(good.bodies) == 1 and trickle.hits == 1


def test_secrets_percent_encoded_in_apprise_and_urllib3_debug_lines_are_masked(tmp_path: Path) -> None:
    receiver = JsonReceiver()
    password, token = "p@ss/wörd+Kq9", "töken k3y-Zq9"
    url = f"json://reporter:{quote(password, safe='')}@127.0.0.1:{receiver.port}/hook/{quote(token)}"
    try:
        run, _ = notify_test(tmp_path, [url], "-v")
    finally:
        receiver.close()
    assert run.returncode == 0, run.stderr
    assert "JSON POST URL" in run.stderr and "***" in run.stderr, "-v shows Apprise's and urllib3's debug lines"
    for secret in (password, token):
        for form in {secret, quote(secret), quote(secret, safe=""), quote_plus(secret)}:
            assert form not in run.stderr, f"{form!r} appears in the log:\n{run.stderr}"
