"""systemd units: those that run `scorer watch` and `scorer serve`, rendered from deploy/ (sd_notify: sdnotify.py)."""

from __future__ import annotations

import grp
import logging
import os
import pwd
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from scorer.errors import ServiceError
from scorer.notify.destinations import CREDENTIAL
from scorer.settings import Settings

log = logging.getLogger(__name__)

UNIT_TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "scorer.service"
SERVE_TEMPLATE = UNIT_TEMPLATE.with_name("scorer-serve.service")
# The instance unit scorer@.service: instance %i (a brand, an account) has its config here and its folders below.
INSTANCE_CONFIG = "/etc/scorer/%i/config.yaml"
INSTANCE_URLS = "/etc/scorer/%i/notify-urls"
INSTANCE_ROOT = "/srv/scorer/%i"


@dataclass(frozen=True)
class Unit:
    """A rendered systemd unit, and the folders it names that must be created before it starts."""

    text: str
    missing: list[Path]


def render_unit(settings: Settings, user: str | None = None, *, web: bool = False, template: bool = False) -> Unit:
    """deploy/scorer.service (or scorer-serve.service) filled in with this install's executable, config, folders
    and user; with `template`, the instance unit scorer@.service, whose instance %i reads INSTANCE_CONFIG."""
    source = SERVE_TEMPLATE if web else UNIT_TEMPLATE
    if not source.is_file():
        raise ServiceError(f"the unit template {source} is missing: run this from a source checkout "
                           "installed with `pip install -e .`")
    try:
        account = pwd.getpwnam(user) if user else pwd.getpwuid(os.getuid())
    except KeyError:
        raise ServiceError(f"no user named {user}: create it, or pass --user with an existing account") from None
    text = source.read_text(encoding="utf-8")
    if not web:  # scorer serve pings from its event loop, which a hung decoder never blocks
        _check_watchdog(settings, text)
    values, writable = _instance_values() if template else _install_values(settings, web)
    values |= {"@USER@": account.pw_name, "@GROUP@": grp.getgrgid(account.pw_gid).gr_name,
               "@NETWORK@": _network(settings, template)}
    for key, value in values.items():
        text = text.replace(key, value)
    return Unit(text, [p for p in writable if not p.is_dir()])


def _command(web: bool) -> list[str]:
    script = Path(sys.executable).with_name("scorer")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "scorer"]
    return [*command, "serve" if web else "watch"]


def _install_values(settings: Settings, web: bool) -> tuple[dict[str, str], list[Path]]:
    command = _command(web)
    workdir = Path.cwd()
    if settings.source is not None:
        command += ["--config", str(settings.source)]
        workdir = settings.source.parent
    folders = [settings.inbox, settings.outbox, settings.state, settings.archive_dir, settings.rejected_dir]
    if web:  # the page reads the outbox and the ledger; it writes only kept uploads
        folders = [settings.state, *([settings.outbox] if settings.serve.keep_uploads else [])]
    # outbox/scored needs no entry of its own when outbox is writable already
    writable = [p for p in dict.fromkeys(folders) if not any(other in p.parents for other in folders)]
    return {
        "@WORKDIR@": str(workdir).replace("%", "%%"),  # the whole value is the path: no quotes
        "@EXEC@": " ".join(_unit_quote(part) for part in command),
        "@READ_WRITE_PATHS@": " ".join(_unit_quote(str(p)) for p in writable),
        "@MOUNTS@": " ".join(_unit_quote(str(p)) for p in (settings.inbox, settings.outbox)),
        "@MPLCONFIGDIR@": _unit_quote(f"MPLCONFIGDIR={settings.state / 'matplotlib'}"),
    }, writable


def _instance_values() -> tuple[dict[str, str], list[Path]]:
    # %i stays a specifier here: each instance gets its own config, folders and model under INSTANCE_ROOT.
    return {
        "@WORKDIR@": INSTANCE_ROOT,
        "@EXEC@": " ".join(_unit_quote(part) for part in _command(False)) + f" --config {INSTANCE_CONFIG}",
        "@READ_WRITE_PATHS@": INSTANCE_ROOT,
        "@MOUNTS@": INSTANCE_ROOT,
        "@MPLCONFIGDIR@": f"MPLCONFIGDIR={INSTANCE_ROOT}/state/matplotlib",
    }, []


def _network(settings: Settings, template: bool) -> str:
    notify = settings.notify
    if not notify.urls and notify.urls_file is None:
        return "PrivateNetwork=yes\nIPAddressDeny=any\nRestrictAddressFamilies=AF_UNIX"
    lines = ["RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"]
    if notify.urls_file is not None:
        path = INSTANCE_URLS if template else str(notify.urls_file).replace("%", "%%")
        lines.append(f"LoadCredential={CREDENTIAL}:{path}")
    return "\n".join(lines)


def _check_watchdog(settings: Settings, unit: str) -> None:
    # While a decoder hangs, the loop waits up to decode_timeout without a ping; the last ping may
    # be a third of WatchdogSec old already, so the hang must end within the other two thirds.
    found = re.search(r"^WatchdogSec=(\d+)\s*$", unit, re.M)
    if found is None:
        return
    watchdog = int(found.group(1))
    limit = watchdog * 2 / 3
    timeout = settings.images.decode_timeout
    if timeout >= limit:
        raise ServiceError(
            f"'images.decode_timeout' is {timeout:g} s, which reaches the unit's WatchdogSec={watchdog} (less the "
            f"{watchdog / 3:.0f} s between pings): systemd would restart the service whenever a file hangs a decoder; "
            f"set 'images.decode_timeout' below {limit:.0f} in config.yaml")


def install_commands(settings: Settings, user: str | None = None, *, web: bool = False,
                     template: bool = False) -> list[str]:
    """The shell commands that render, install and start the unit (with `template`, its first instance)."""
    render = ["scorer", "service"]
    if settings.source is not None:
        render += ["--config", str(settings.source)]
    if user:
        render += ["--user", user]
    if web:
        render.append("--serve")
    if template:
        render.append("--template")
    name = "scorer-serve" if web else "scorer@" if template else "scorer"
    started = "scorer@brand-a" if template else name
    return [
        " ".join(shlex.quote(part) for part in render) + f" > {name}.service",
        f"sudo install -m 644 {name}.service /etc/systemd/system/{name}.service",
        "sudo systemctl daemon-reload",
        f"sudo systemctl enable --now {started}",
        f"journalctl -u {started} -f",
    ]


def _unit_quote(text: str) -> str:
    # systemd expands %-specifiers in unit files and splits on spaces unless quoted
    text = text.replace("%", "%%")
    return shlex.quote(text) if any(c in text for c in " \t\"'\\") else text
