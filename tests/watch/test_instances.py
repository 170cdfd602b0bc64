"""Several accounts on one host: `scorer service --template` and two instances of it side by side."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from scorer.cli import main
from scorer.watch.lease import LEASE_NAME
from tests.helpers import Project, after_first_start, tool_or_warn
from tests.imagegen import CLASS_COLOURS, write_creative
from tests.workbooks import files_across

BRANDS = ("brand-a", "brand-b")


def template(config: Path) -> str:
    result = CliRunner().invoke(main, ["service", "--template", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "sudo systemctl enable --now scorer@brand-a" in result.stderr
    return result.stdout


def exposure(unit: str, folder: Path) -> float | None:
    """systemd-analyze's overall exposure of the rendered unit (its syntax verified first), or None without it."""
    if tool_or_warn("systemd-analyze", "systemd", "the template unit's exposure") is None:
        return None
    path = folder / "scorer@.service"
    path.write_text(unit)
    instance = path.with_name("scorer@brand-a.service")
    shutil.copy(path, instance)  # verify wants an instance name; security reads the template itself
    verify = subprocess.run(["systemd-analyze", "verify", str(instance)], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr
    check = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(path)], capture_output=True, text=True)
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", check.stdout + check.stderr)
    assert found is not None, check.stdout + check.stderr
    return float(found.group(1))


@pytest.mark.parametrize("notify", ["", "notify:\n  urls_file: /etc/scorer/notify-urls\n"], ids=["quiet", "notify"])
def test_the_template_unit_gives_each_instance_its_own_config_and_folders_and_rates_ok(
        tmp_path: Path, notify: str) -> None:
    (tmp_path / "config.yaml").write_text("model: models/m.pkl\n" + notify)
    unit = template(tmp_path / "config.yaml")
    assert re.search(r"^ExecStart=\S+ watch --config /etc/scorer/%i/config\.yaml$", unit, re.M)
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    for line in ("WorkingDirectory=/srv/scorer/%i", "ReadWritePaths=/srv/scorer/%i",
                 "Environment=MPLCONFIGDIR=/srv/scorer/%i/state/matplotlib", "NoNewPrivileges=true",
                 "ProtectSystem=strict", "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service"):
        assert line in unit
    if notify:  # destinations need Internet sockets; their URLs come in as each instance's credential
        assert "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" in unit and "PrivateNetwork" not in unit
        assert "LoadCredential=notify-urls:/etc/scorer/%i/notify-urls" in unit
    else:
        assert "PrivateNetwork=yes" in unit and "IPAddressDeny=any" in unit
    assert not re.search(r"@[A-Z_]+@", unit), "every placeholder filled in"
    score = exposure(unit, tmp_path)
    assert score is None or score <= 4.0, f"systemd-analyze security rates the template {score}"


@pytest.fixture
def instances(tmp_path: Path, tiny_learner: Path, first_start: Path) -> Iterator[dict[str, Project]]:
    """Two brands laid out as the template expects: etc/scorer/<brand>/config.yaml, srv/scorer/<brand>/..."""
    brands = {}
    for brand in BRANDS:
        root = Project(tmp_path / "srv/scorer" / brand)
        for name in ("inbox", "outbox", "models", "state"):
            (root.root / name).mkdir(parents=True)
        shutil.copy(tiny_learner, root.models / "tiny.pkl")
        os.chmod(root.models / "tiny.pkl", 0o644)
        after_first_start(first_start, root.root)
        config = tmp_path / "etc/scorer" / brand / "config.yaml"
        config.parent.mkdir(parents=True)
        config.write_text(f"model: {root.models / 'tiny.pkl'}\ninbox: {root.inbox}\noutbox: {root.outbox}\n"
                          f"state: {root.root / 'state'}\nreport:\n  explain: never\n"
                          "images:\n  decode_workers: 1\n  decode: exact\n"
                          "watch:\n  settle_seconds: 0.4\n  rescan_seconds: 2\n")
        brands[brand] = root
    yield brands


@pytest.mark.slow
def test_two_instances_side_by_side_each_score_only_their_own_creatives(
        tmp_path: Path, instances: dict[str, Project]) -> None:
    unit = template(tmp_path / "etc/scorer" / BRANDS[0] / "config.yaml")
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", unit, re.M)
    running = []
    try:
        for brand in BRANDS:  # what systemd runs for scorer@<brand>, with /etc/scorer under this test's folder
            command = exec_start.replace("%i", brand).replace("/etc/scorer/", f"{tmp_path}/etc/scorer/")
            with open(tmp_path / f"{brand}.log", "w") as log:  # a file, not a pipe nobody reads until the end
                running.append(subprocess.Popen(shlex.split(command), cwd=instances[brand].root,
                                                stdout=subprocess.DEVNULL, stderr=log))
        dropped = {}
        for n, (brand, project) in enumerate(instances.items()):
            dropped[brand] = [f"{brand}-{k}.jpg" for k in range(4)]
            for k, name in enumerate(dropped[brand]):
                write_creative(project.inbox / name, list(CLASS_COLOURS.values())[k % 3], (48, 40), seed=10 * n + k)
        deadline = time.monotonic() + 120
        while any(_waiting(p) for p in instances.values()) and time.monotonic() < deadline:
            assert all(proc.poll() is None for proc in running), "an instance died"
            time.sleep(0.1)
        for brand, project in instances.items():
            scored = files_across(sorted(project.outbox.glob("engagement-report-*-batch*.xlsx")), "Ranking")
            assert sorted(scored) == dropped[brand], f"{brand} scored exactly its own creatives"
            assert sorted(p.name for p in (project.outbox / "scored").rglob("*.jpg")) == dropped[brand]
    finally:
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        codes = [proc.wait(30) for proc in running]
    assert codes == [0, 0], [(tmp_path / f"{brand}.log").read_text() for brand in BRANDS]


def _waiting(project: Project) -> bool:
    return any(p.is_file() and p.name != LEASE_NAME for p in project.inbox.rglob("*"))
