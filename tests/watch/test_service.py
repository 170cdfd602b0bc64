"""`scorer watch` as a real subprocess: a real observer, real files, real signals, sd_notify over a real socket."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from scorer.cli import main
from scorer.sdnotify import Notifier
from tests.support.helpers import (
    COLOURS,
    Project,
    Service,
    configure,
    inbox_files,
    reports,
    start,
    tool_or_warn,
    wait_until_empty,
)
from tests.support.imagegen import creative, write_creative
from tests.support.workbooks import files_across


def copy_slowly(path: Path, data: bytes, chunks: int, pause: float) -> None:
    """Write a file in chunks with pauses, as a slow network copy would."""
    size = -(-len(data) // chunks)
    with open(path, "wb") as handle:
        for start in range(0, len(data), size):
            handle.write(data[start:start + size])
            handle.flush()
            time.sleep(pause)


@pytest.mark.slow
def test_the_service_scores_everything_dropped_once_and_stops_cleanly(watched: Project, services: list[Service],
                                                                      tmp_path: Path) -> None:
    configure(watched, max_batch=200)
    write_creative(watched.inbox / "early-red.jpg", COLOURS[2], (64, 48), seed=1)
    write_creative(watched.inbox / "early-blue.png", COLOURS[0], (64, 48), seed=2)
    service = start(watched, services, watchdog_usec=600_000)

    ready = service.wait_message("READY=1")
    # Order is read within one channel: stderr and the notify socket are read by two threads, so
    # their arrival times cannot order a log line against a message. The service logs "ready:"
    # right after it sends READY=1, and sends STATUS=watching right before it.
    readied = service.wait_log(r"ready: ")
    loaded = service.wait_log(r"model .* loaded")
    watching = service.wait_log(r"watching .* \(events\)")
    assert loaded < readied and watching < readied, "READY=1 only after the model loaded and the watcher started"
    sent = [message for _, message in service.messages]
    assert any(message.startswith("STATUS=watching") for message in sent[:sent.index("READY=1")])
    assert service.wait_message("WATCHDOG=1") > ready
    service.wait_log(r"batch 1: 2 scored")

    # Two services must never share a state folder (and so an inbox).
    second = subprocess.run([sys.executable, "-m", "scorer", "watch", "--once", "--config", str(watched.config)],
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 2 and "another scorer watch (pid" in second.stderr

    # A slow copy (pauses shorter than the settle time), a broken file, a half-downloaded
    # .part that is renamed later, and a re-drop of content scored before.
    big = creative(COLOURS[1], (900, 700), seed=3)
    big.save(tmp_path / "big.jpg", quality=95)
    data = (tmp_path / "big.jpg").read_bytes()
    writer = threading.Thread(target=copy_slowly, args=(watched.inbox / "slow.jpg", data, 10, 0.15))
    writer.start()
    (watched.inbox / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    write_creative(watched.inbox / "download.jpg.part", COLOURS[2], (64, 48), seed=4, fmt="JPEG")
    (archived,) = (watched.outbox / "scored").glob("*/early-red.jpg")
    shutil.copy(archived, watched.inbox / "again-red.jpg")
    writer.join()
    time.sleep(1.5)  # several settle times: the .part file must still wait
    assert (watched.inbox / "download.jpg.part").exists()
    decided = [files_across(reports(watched), sheet) for sheet in ("Ranking", "Rejected", "Duplicates")]
    assert not any(name.startswith("download") for names in decided for name in names)
    (watched.inbox / "download.jpg.part").rename(watched.inbox / "download.jpg")
    wait_until_empty(watched, service)

    # 500 files at once.
    staging = tmp_path / "staging"
    for n in range(500):
        write_creative(staging / f"burst-{n:03}.jpg", COLOURS[n % 3], (40, 32), seed=100 + n)
    for path in sorted(staging.iterdir()):
        shutil.copy(path, watched.inbox / path.name)
    wait_until_empty(watched, service, timeout=120)
    # Once its STATUS counts all 504, the last batch and latest.xlsx are written.
    service.wait_message_matching(r"STATUS=watching; .* 504 scored, 1 rejected, 1 duplicates", timeout=120)
    code, took = service.signal(signal.SIGTERM)
    assert code == 0 and took < 10, service.log
    service.wait_message("STOPPING=1", timeout=5)

    every = reports(watched)
    ranking = files_across(every, "Ranking")
    expected = ["early-red.jpg", "early-blue.png", "slow.jpg", "download.jpg"]
    expected += [f"burst-{n:03}.jpg" for n in range(500)]
    assert sorted(ranking) == sorted(expected), "each creative exactly once across the reports"
    assert files_across(every, "Rejected") == ["broken.jpg"]
    assert files_across(every, "Duplicates") == ["again-red.jpg"]
    assert sorted(files_across([watched.outbox / "latest.xlsx"], "Ranking")) == sorted(expected), \
        "latest.xlsx holds the cumulative ranking"
    rejected = watched.outbox / "rejected"
    assert (rejected / "broken.jpg.reason.txt").read_text() == "file is incomplete or corrupt\n"
    assert "same content as early-red.jpg" in (rejected / "again-red.jpg.reason.txt").read_text()
    assert len(list((watched.outbox / "scored").rglob("*.*"))) == len(expected)


@pytest.mark.slow
def test_polling_mode_picks_files_up(watched: Project, services: list[Service]) -> None:
    configure(watched, polling=True, poll_interval=0.2)
    service = start(watched, services)
    service.wait_log(r"watching .* \(polling\)")
    service.wait_message("READY=1")
    write_creative(watched.inbox / "polled.jpg", COLOURS[2], (64, 48))
    (watched.inbox / "sub").mkdir()
    write_creative(watched.inbox / "sub" / "nested.jpg", COLOURS[0], (64, 48))
    wait_until_empty(watched, service)
    service.wait_log(r"batch \d+: \d+ scored")
    assert service.signal(signal.SIGINT)[0] == 0
    assert sorted(files_across(reports(watched), "Ranking")) == ["polled.jpg", "sub/nested.jpg"]


# Where kill -9 lands, as the service's own log tells: while the batch is scored, just after
# it was recorded (while its report is written), just after the report (while files move),
# and just after the batch (while latest.xlsx is rewritten). The in-process tests in
# test_hotfolder.py crash at each step exactly; these show the same with a real kill -9.
KILL_POINTS = [r"scoring a batch of", r"batch \d+ recorded", r"batch \d+ reported: moving", r"batch \d+: \d+ scored"]


@pytest.mark.slow
def test_kill_9_anywhere_then_restart_scores_every_file_exactly_once(watched: Project, services: list[Service]
                                                                     ) -> None:
    configure(watched, max_batch=25, settle_seconds=0.3)
    names: list[str] = []

    def refill(cycle: int) -> None:
        # fresh files before every start, so each run has a batch to be killed in
        for n in range(30):
            names.append(f"k{cycle}-{n:02}.jpg")
            write_creative(watched.inbox / names[-1], COLOURS[n % 3], (640, 640), seed=len(names))

    (watched.inbox / "zz-broken.jpg").write_bytes(b"junk")
    for cycle, pattern in enumerate(KILL_POINTS):
        refill(cycle)
        service = start(watched, services)
        service.wait_log(pattern, timeout=120)
        service.proc.send_signal(signal.SIGKILL)
        service.proc.wait(10)

    # A SIGTERM in the middle of a batch finishes or abandons it cleanly.
    refill(len(KILL_POINTS))
    service = start(watched, services)
    service.wait_log(r"scoring a batch of", timeout=120)
    code, took = service.signal(signal.SIGTERM)
    assert code == 0 and took < 10, service.log

    once = subprocess.run([sys.executable, "-m", "scorer", "watch", "--once", "--config", str(watched.config)],
                          capture_output=True, text=True, timeout=240)
    assert once.returncode == 0, once.stderr
    every = reports(watched)
    ranking = files_across(every, "Ranking")
    assert sorted(ranking) == sorted(names), f"{len(ranking)} rows for {len(names)} files"
    assert files_across(every, "Rejected") == ["zz-broken.jpg"]
    assert inbox_files(watched) == []
    assert sorted(p.name for p in (watched.outbox / "scored").rglob("*.jpg")) == sorted(names)
    assert not list(watched.outbox.rglob(".~*")), "no temporary file survives a restart"
    assert sorted(files_across([watched.outbox / "latest.xlsx"], "Ranking")) == sorted(names)


def test_notifier_speaks_the_sd_notify_protocol(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        notifier = Notifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "3000000"})
        assert notifier.interval == pytest.approx(1.0)
        notifier.send("READY=1", "STATUS=watching")
        assert sock.recv(100) == b"READY=1\nSTATUS=watching"
        notifier.ping()
        notifier.ping()  # within the interval: not sent again
        notifier.send("STOPPING=1")
        assert [sock.recv(100), sock.recv(100)] == [b"WATCHDOG=1", b"STOPPING=1"]
    Notifier({}).send("READY=1")  # not under systemd: silently nothing
    assert Notifier({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}).interval == 5.0, "pings meant for another pid"


def test_scorer_service_prints_a_unit_for_this_install(project: Project) -> None:
    project.write_config("model: models/tiny.pkl\nwatch:\n  rejected: /srv/rejected-creatives\n")
    result = CliRunner().invoke(main, ["service", "--config", str(project.config)])
    assert result.exit_code == 0, result.output
    unit = result.stdout
    assert "Type=notify" in unit and "WatchdogSec=" in unit and "RestartSec=" in unit
    assert "Restart=on-failure" in unit and "KillMode=mixed" in unit
    assert "PYTHONUNBUFFERED=1" in unit and "NoNewPrivileges=true" in unit and "PrivateTmp=true" in unit
    active = [line for line in unit.splitlines() if not line.startswith("#")]
    assert not any(line.startswith(("PrivateDevices", "MemoryDenyWriteExecute")) for line in active)
    assert f"ExecStart={Path(sys.executable).with_name('scorer')} watch --config {project.config}" in unit
    assert f"WorkingDirectory={project.root}" in unit
    assert f"Environment=MPLCONFIGDIR={project.root / 'state'}/matplotlib" in unit
    assert (f"ReadWritePaths={project.inbox} {project.outbox} {project.root / 'state'} /srv/rejected-creatives"
            in unit), "outbox/scored is covered by outbox; state and an outside rejected folder are listed"
    assert not re.search(r"@[A-Z_]+@", "".join(active)), "every placeholder filled in"
    assert "sudo systemctl enable --now scorer" in result.stderr
    assert "create /srv/rejected-creatives" in result.stderr
    if tool_or_warn("systemd-analyze", "systemd", "the unit's syntax") is None:
        return
    unit_file = project.root / "scorer.service"
    unit_file.write_text(unit)
    check = subprocess.run(["systemd-analyze", "verify", str(unit_file)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_the_unit_quotes_paths_with_spaces_and_percent_signs(tmp_path: Path) -> None:
    root = tmp_path / "Marketing 100% shared"
    for name in ("inbox", "outbox", "state"):
        (root / name).mkdir(parents=True)
    (root / "config.yaml").write_text("model: models/m.pkl\n")
    result = CliRunner().invoke(main, ["service", "--config", str(root / "config.yaml")])
    assert result.exit_code == 0, result.output
    escaped = str(root).replace("%", "%%")
    assert f"WorkingDirectory={escaped}\n" in result.stdout
    assert f"ReadWritePaths='{escaped}/inbox' '{escaped}/outbox' '{escaped}/state'" in result.stdout
    if tool_or_warn("systemd-analyze", "systemd", "the unit's syntax") is None:
        return
    (tmp_path / "scorer.service").write_text(result.stdout)
    check = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "scorer.service")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_folders_inside_the_inbox_are_refused(project: Project) -> None:
    project.write_config("model: models/tiny.pkl\noutbox: inbox/reports\n")
    (project.inbox / "reports").mkdir()
    result = CliRunner().invoke(main, ["watch", "--once", "--config", str(project.config)])
    assert result.exit_code == 2
    assert "is inside the inbox" in result.output and "change 'outbox' in config.yaml" in result.output
