"""Several brands on one host: `scorer service --template`, each instance under its own user and folders, a
per-instance network drop-in (`--instance`), and two instances side by side."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from scorer.cli import main
from scorer.watch.lease import LEASE_NAME
from tests.support.helpers import Project, after_first_start, tool_or_warn
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.workbooks import files_across

BRANDS = ("brand-a", "brand-b")


def template(config: Path) -> str:
    result = CliRunner().invoke(main, ["service", "--template", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "sudo systemctl enable --now scorer@brand-a" in result.stderr
    assert "sudo useradd --system --user-group" in result.stderr and " scorer-brand-a" in result.stderr
    return result.stdout


def security(unit: str, folder: Path, network: str | None = None) -> dict[str, str] | None:
    """systemd-analyze's security report on instances brand-a (with the drop-in `network`, when given) and
    brand-b of the rendered template, once `verify` has read each without complaint; None without the tool."""
    if tool_or_warn("systemd-analyze", "systemd", "the template unit's syntax and exposure") is None:
        return None
    units = folder / "root/etc/systemd/system"
    units.mkdir(parents=True)
    (units / "scorer@.service").write_text(unit)
    if network is not None:
        (units / "scorer@brand-a.service.d").mkdir()
        (units / "scorer@brand-a.service.d/network.conf").write_text(network)
    reports = {}
    for brand in BRANDS:
        instance = units / f"scorer@{brand}.service"
        shutil.copy(units / "scorer@.service", instance)  # verify wants an instance's file; it reads its drop-ins
        verify = subprocess.run(["systemd-analyze", "verify", str(instance)], capture_output=True, text=True)
        assert verify.returncode == 0 and str(units) not in verify.stderr, verify.stderr
        check = subprocess.run(["systemd-analyze", "security", "--offline=yes", f"--root={folder / 'root'}",
                                instance.name], capture_output=True, text=True)
        reports[brand] = check.stdout + check.stderr
    return reports


def exposure(report: str) -> float:
    found = re.search(r"Overall exposure level for \S+: ([\d.]+)", report)
    assert found is not None, report
    return float(found.group(1))


def directive(unit: str, key: str, instance: str) -> list[str]:
    """The paths that every `key=` line of the unit names for `instance`, in order (":ro" and the like dropped)."""
    lines = re.findall(rf"^{key}=(.*)$", unit.replace("%i", instance), re.M)
    return [path.split(":")[0] for line in lines for path in line.split()]


def seen_by(unit: str, instance: str, path: str) -> str:
    """What the instance's mount namespace makes of a host path, as far as the unit's settings tell: the most
    specific setting over it decides whether it is "hidden", "read-only" or "writable"."""
    kinds = {"TemporaryFileSystem": "hidden", "InaccessiblePaths": "hidden", "BindPaths": "writable",
             "ReadWritePaths": "writable", "BindReadOnlyPaths": "read-only", "ReadOnlyPaths": "read-only"}
    seen = [(0, "read-only" if "ProtectSystem=strict" in unit else "writable")]
    for key, kind in kinds.items():
        seen += [(len(root), kind) for root in directive(unit, key, instance)
                 if path == root or path.startswith(root + "/")]
    return max(seen)[1]


@pytest.mark.parametrize("notify", ["", "notify:\n  urls_file: /etc/scorer/notify-urls\n"], ids=["quiet", "notify"])
def test_each_instance_runs_as_its_own_user_and_sees_only_its_own_folders(tmp_path: Path, notify: str) -> None:
    (tmp_path / "config.yaml").write_text("model: models/m.pkl\n" + notify)
    unit = template(tmp_path / "config.yaml")
    assert re.search(r"^ExecStart=\S+ watch --config /etc/scorer/%i/config\.yaml$", unit, re.M)
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    for line in ("User=scorer-%i\n", "Group=scorer-%i\n", "WorkingDirectory=/srv/scorer/%i\n",
                 "TemporaryFileSystem=/srv/scorer:ro /etc/scorer:ro\n",
                 "BindPaths=/srv/scorer/%i/inbox /srv/scorer/%i/outbox /srv/scorer/%i/state\n",
                 "BindReadOnlyPaths=/srv/scorer/%i/models /etc/scorer/%i\n",
                 "Environment=MPLCONFIGDIR=/srv/scorer/%i/state/matplotlib", "NoNewPrivileges=true",
                 "ProtectSystem=strict", "CapabilityBoundingSet=\n", "SystemCallFilter=@system-service"):
        assert line in unit
    active = [line for line in unit.splitlines() if not line.startswith("#")]
    assert not [line for line in active if line.startswith(("ReadWritePaths", "ReadOnlyPaths", "DynamicUser"))]
    # A notify config at render time no longer opens the network of every instance: one drop-in does, for one.
    assert "PrivateNetwork=yes" in unit and "IPAddressDeny=any" in unit and "LoadCredential" not in unit
    assert not re.search(r"@[A-Z_]+@", unit), "every placeholder filled in"
    own, other = "/srv/scorer/brand-a", "/srv/scorer/brand-b"
    assert {name: seen_by(unit, "brand-a", f"{own}/{name}/x") for name in ("inbox", "outbox", "state", "models")} \
        == {"inbox": "writable", "outbox": "writable", "state": "writable", "models": "read-only"}
    assert seen_by(unit, "brand-a", "/etc/scorer/brand-a/config.yaml") == "read-only"
    for path in (other, f"{other}/inbox/launch.jpg", f"{other}/state/ledger.sqlite", f"{other}/outbox/latest.xlsx",
                 f"{other}/models/engagement.pkl", f"{own}-old/state", "/srv/scorer/notes.txt",
                 "/etc/scorer/brand-b/config.yaml", "/etc/scorer/brand-b/notify-urls", "/etc/scorer/notify-urls"):
        assert seen_by(unit, "brand-a", path) == "hidden", f"instance brand-a sees {path}"
    assert directive(unit, "User", "brand-a") != directive(unit, "User", "brand-b"), "and outside it, a user of its own"
    reports = security(unit, tmp_path)
    if reports is not None:
        assert [exposure(report) <= 2.0 for report in reports.values()] == [True, True], reports


def test_the_template_runs_no_instance_as_a_given_user(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("model: models/m.pkl\n")
    result = CliRunner().invoke(main, ["service", "--template", "--user", "root", "--config",
                                       str(tmp_path / "config.yaml")])
    assert result.exit_code == 2 and "scorer-NAME" in result.output


def test_a_drop_in_gives_one_instance_network_for_its_notifications_and_no_other(tmp_path: Path) -> None:
    config = tmp_path / "etc/scorer/brand-a/config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(f"model: models/m.pkl\nnotify:\n  urls_file: {config.parent}/notify-urls\n")
    result = CliRunner().invoke(main, ["service", "--instance", "brand-a", "--config", str(config)])
    assert result.exit_code == 0, result.output
    network = result.stdout
    for line in ("[Service]\n", "PrivateNetwork=no\n", "IPAddressDeny=\n", "RestrictAddressFamilies=\n",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n",
                 f"LoadCredential=notify-urls:{config.parent}/notify-urls\n"):
        assert line in network
    assert "/etc/systemd/system/scorer@brand-a.service.d/network.conf" in result.stderr
    assert "sudo systemctl restart scorer@brand-a" in result.stderr
    reports = security(template(config), tmp_path, network)
    if reports is not None:
        internet = r"✗ RestrictAddressFamilies=~AF_\(INET\|INET6\)"
        assert re.search(internet, reports["brand-a"]) and "✗ PrivateNetwork=" in reports["brand-a"]
        assert not re.search(internet, reports["brand-b"]) and "✓ PrivateNetwork=" in reports["brand-b"]
        assert [exposure(report) <= 2.0 for report in reports.values()] == [True, True], reports


@pytest.mark.parametrize(("name", "config", "fix"), [
    ("brand-a", "model: models/m.pkl\n", "sets no notify destinations"),
    ("Brand A", "model: models/m.pkl\nnotify:\n  urls: ['json://localhost']\n", "lower-case letters"),
])
def test_no_drop_in_for_an_instance_without_destinations_or_with_a_name_no_user_can_have(
        tmp_path: Path, name: str, config: str, fix: str) -> None:
    (tmp_path / "config.yaml").write_text(config)
    result = CliRunner().invoke(main, ["service", "--instance", name, "--config", str(tmp_path / "config.yaml")])
    assert result.exit_code == 2 and fix in result.output, result.output


def test_an_install_under_the_hidden_folders_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.yaml").write_text("model: models/m.pkl\n")
    monkeypatch.setattr(sys, "executable", "/srv/scorer/app/.venv/bin/python")
    result = CliRunner().invoke(main, ["service", "--template", "--config", str(tmp_path / "config.yaml")])
    assert result.exit_code == 2 and "/srv/scorer/app/.venv/bin/python" in result.output, result.output


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
