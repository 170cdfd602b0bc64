"""The service's remaining holes, end to end: the inbox lease, failed writes in STATUS=, the hardened unit.

Real `scorer watch` subprocesses, real signals and sd_notify. A full disk is injected at the
system call (os.replace) through a sitecustomize on the service's PYTHONPATH, switched on and
off by a flag file, so the process itself is untouched.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from scorer.cli import main
from scorer.decoding.vet import is_ignored_name
from scorer.errors import ServiceError
from scorer.notify.queue import QUEUE_NAME, NotificationQueue
from scorer.watch.lease import LEASE_NAME, inbox_lease
from tests.support.helpers import Project, Service, configure, inbox_files, reports, start, tool_or_warn
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.receivers import JsonReceiver, notify_section

# The fixtures of test_watch_service: a project with the tiny learner's ONNX export, and running services.

COLOURS = list(CLASS_COLOURS.values())

DISK_FULL = '''
import errno, os
_replace = os.replace
def _full_disk(src, dst, *args, **kwargs):
    if os.path.exists(os.environ["SCORER_DISK_FULL"]) and os.fspath(dst).endswith(".xlsx"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(dst))
    return _replace(src, dst, *args, **kwargs)
os.replace = _full_disk
'''


def _full_disk(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A flag that, while it exists, fills the disk for every report a service writes; the service's environment."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(DISK_FULL)
    flag = tmp_path / "disk-is-full"
    flag.touch()
    return flag, {"PYTHONPATH": os.pathsep.join([str(hooks), os.environ.get("PYTHONPATH", "")]),
                  "SCORER_DISK_FULL": str(flag)}


@pytest.mark.slow
def test_a_full_disk_shows_in_status_the_inbox_keeps_flowing_and_reports_follow(
        watched: Project, services: list[Service], tmp_path: Path) -> None:
    flag, env = _full_disk(tmp_path)
    configure(watched)
    service = start(watched, services, env=env)
    service.wait_message("READY=1")
    write_creative(watched.inbox / "first.jpg", COLOURS[0], (64, 48), seed=1)
    service.wait_message_matching(r"^STATUS=.*cannot write report engagement-report-.*No space left on device.*"
                                  r"\(retrying\)")
    write_creative(watched.inbox / "second.jpg", COLOURS[2], (64, 48), seed=2)
    deadline = time.monotonic() + 60
    while inbox_files(watched) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert inbox_files(watched) == [], f"the inbox keeps flowing while reports cannot be written:\n{service.log}"
    assert service.proc.poll() is None and reports(watched) == []
    flag.unlink()  # space was freed
    deadline = time.monotonic() + 60
    while len(reports(watched)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(reports(watched)) == 2, f"unwritten reports are written once the cause is gone:\n{service.log}"
    service.wait_log(r"writes work again")
    deadline = time.monotonic() + 60  # latest.xlsx has its own rebuilder, retried with its own backoff
    while not (watched.outbox / "latest.xlsx").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert (watched.outbox / "latest.xlsx").exists(), service.log


@pytest.mark.slow
def test_trouble_that_cannot_be_queued_is_logged_and_the_service_keeps_scoring(
        watched: Project, services: list[Service], tmp_path: Path) -> None:
    _, env = _full_disk(tmp_path)  # the disk stays full: trouble is told, and cannot be queued
    receiver = JsonReceiver()
    configure(watched)
    with open(watched.config, "a") as config:
        config.write(notify_section(watched.root, [receiver.url], trouble_minutes=0.01))
    NotificationQueue(watched.root / "state", 1.0).close()
    holder = sqlite3.connect(watched.root / "state" / QUEUE_NAME, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # the queue is locked by another process all along
    try:
        service = start(watched, services, env=env)
        service.wait_message("READY=1")
        write_creative(watched.inbox / "first.jpg", COLOURS[0], (64, 48), seed=1)
        told = service.wait_log(r"notification trouble-\d+ not queued: .*database is locked.*scoring goes on",
                                timeout=60)
        write_creative(watched.inbox / "second.jpg", COLOURS[1], (64, 48), seed=2)
        deadline = time.monotonic() + 60
        while inbox_files(watched) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert inbox_files(watched) == [] and service.proc.poll() is None, service.log
        assert not [line for _, line in service.lines[told:] if "Traceback" in line], service.log
        assert service.signal(signal.SIGTERM)[0] == 0
    finally:
        holder.close()
        receiver.close()


def test_a_newline_in_a_file_name_cannot_forge_a_log_line() -> None:
    code = ("import logging; from scorer.console import setup_logging; setup_logging(False); "
            "logging.getLogger('scorer.watch.disposal').error('cannot move %s', 'inbox/a.jpg\\nERROR scorer: forged')")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stderr.splitlines() == ["ERROR scorer.watch.disposal: cannot move inbox/a.jpg\\nERROR scorer: forged"]


@pytest.mark.slow
def test_a_second_service_on_the_same_inbox_refuses_to_start_naming_the_first(
        watched: Project, services: list[Service], tmp_path: Path) -> None:
    configure(watched)
    first = start(watched, services)
    first.wait_message("READY=1")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.yaml").write_text(
        f"model: {watched.models / 'tiny.pkl'}\ninbox: {watched.inbox}\noutbox: {watched.outbox}\n"
        f"state: {other / 'state'}\n")
    second = subprocess.run([sys.executable, "-m", "scorer", "watch", "--config", str(other / "config.yaml")],
                            capture_output=True, text=True, timeout=120, cwd=other)
    assert second.returncode == 2
    assert (f"another scorer watch (pid {first.proc.pid} on host {socket.gethostname()}) is serving the inbox "
            f"{watched.inbox}") in second.stderr
    code, _ = first.signal(15)
    assert code == 0 and not (watched.inbox / LEASE_NAME).exists(), "a clean stop gives the lease back"


def test_a_lease_left_by_a_dead_service_is_taken_over(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LEASE_NAME).write_text(f"{socket.gethostname()} {gone.stdout.strip()}\n")
    with inbox_lease(tmp_path) as lease:
        assert (tmp_path / LEASE_NAME).read_text() == f"{socket.gethostname()} {os.getpid()}\n" == lease.owner + "\n"
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        try:
            (tmp_path / LEASE_NAME).write_text(f"{socket.gethostname()} {sleeper.pid}\n")
            with pytest.raises(ServiceError, match=f"pid {sleeper.pid} on host"), inbox_lease(tmp_path):
                pass
        finally:
            sleeper.kill()
            sleeper.wait()
    # Another host's lease is live while it is fresh, whatever its pid.
    (tmp_path / LEASE_NAME).write_text("elsewhere 1\n")
    with pytest.raises(ServiceError, match="pid 1 on host elsewhere"), inbox_lease(tmp_path):
        pass


def test_a_state_folder_inside_the_inbox_is_refused_before_it_is_made(project: Project) -> None:
    project.write_config("model: models/tiny.pkl\nstate: inbox/state\n")
    result = CliRunner().invoke(main, ["watch", "--once", "--config", str(project.config)])
    assert result.exit_code == 2 and "change 'state' in config.yaml" in result.output
    assert not (project.inbox / "state").exists()


def test_scorer_service_refuses_a_decode_timeout_that_reaches_the_watchdog(project: Project) -> None:
    project.write_config("model: models/tiny.pkl\nimages:\n  decode_timeout: 100\n")
    result = CliRunner().invoke(main, ["service", "--config", str(project.config)])
    assert result.exit_code == 2
    assert "reaches the unit's WatchdogSec=120" in result.output and "below 80" in result.output


def test_the_unit_rates_ok_under_systemd_analyze_security(project: Project) -> None:
    result = CliRunner().invoke(main, ["service", "--config", str(project.config)])
    assert result.exit_code == 0, result.output
    unit = result.stdout
    for line in ("PrivateNetwork=yes", "RestrictAddressFamilies=AF_UNIX", "CapabilityBoundingSet=\n",
                 "SystemCallFilter=@system-service", "ProtectKernelTunables=yes", "ProtectKernelModules=yes",
                 "ProtectKernelLogs=yes", "RestrictSUIDSGID=yes", "UMask=0027"):
        assert line in unit
    if tool_or_warn("systemd-analyze", "systemd", "the unit's exposure") is None:
        return
    path = project.root / "scorer.service"
    path.write_text(unit)
    check = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(path)],
                           capture_output=True, text=True)
    found = re.search(r"Overall exposure level for scorer\.service: ([\d.]+)", check.stdout + check.stderr)
    assert found is not None, check.stdout + check.stderr
    assert float(found.group(1)) <= 4.0, check.stdout


@pytest.mark.parametrize("name", ["Thumbs.db", "THUMBS.DB", "desktop.ini", "Desktop.ini", "clip.mov.filepart",
                                  "banner.JPG.download", "banner.PART", ".DS_Store"])
def test_sync_client_and_os_litter_is_ignored_whatever_its_case(name: str) -> None:
    assert is_ignored_name(name)
    assert not is_ignored_name("banner.jpg")
