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
from pathlib import Path, PurePosixPath

from scorer.errors import ServiceError
from scorer.notify.destinations import CREDENTIAL
from scorer.settings import Settings

log = logging.getLogger(__name__)

UNIT_TEMPLATE = Path(__file__).resolve().parents[1] / "deploy" / "scorer.service"
SERVE_TEMPLATE = UNIT_TEMPLATE.with_name("scorer-serve.service")
NETWORK_DROPIN = UNIT_TEMPLATE.with_name("scorer@network.conf")
# The instance unit scorer@.service: instance %i (a brand, an account) runs as its own user, has its config
# here and its folders below. Its namespace hides HIDDEN, every brand's folders and configs, then binds
# back its own: another brand's are not there at all, and their owners' permissions bar it besides.
INSTANCE_USER = "scorer-%i"
INSTANCE_ETC = "/etc/scorer/%i"
INSTANCE_CONFIG = f"{INSTANCE_ETC}/config.yaml"
INSTANCE_ROOT = "/srv/scorer/%i"
HIDDEN = tuple(str(PurePosixPath(path).parent) for path in (INSTANCE_ROOT, INSTANCE_ETC))
# scorer-NAME must be a user name: lower case, at most 32 characters, nothing systemd would escape.
INSTANCE_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,24}")
# The unit's answer to "no notify destinations", and the template's to every instance: no network at all.
NO_NETWORK = "PrivateNetwork=yes\nIPAddressDeny=any\nRestrictAddressFamilies=AF_UNIX"


@dataclass(frozen=True)
class Unit:
    """A rendered systemd unit, and the folders it names that must be created before it starts."""

    text: str
    missing: list[Path]


def render_unit(settings: Settings, user: str | None = None, *, web: bool = False, template: bool = False) -> Unit:
    """deploy/scorer.service (or scorer-serve.service) filled in with this install's executable, config, folders
    and user; with `template`, the instance unit scorer@.service, whose instance %i runs as scorer-%i and reads
    INSTANCE_CONFIG, with no network (render_network_dropin gives one instance network)."""
    if template and user:
        raise ServiceError("each instance NAME of the template runs as its own user scorer-NAME: leave out --user")
    text = _read_template(SERVE_TEMPLATE if web else UNIT_TEMPLATE)
    if not web:  # scorer serve pings from its event loop, which a hung decoder never blocks
        _check_watchdog(settings, text)
    values, writable = (_instance_values(), []) if template else _install_values(settings, web, user)
    for key, value in values.items():
        text = text.replace(key, value)
    return Unit(text, [p for p in writable if not p.is_dir()])


def render_network_dropin(settings: Settings, instance: str) -> str:
    """deploy/scorer@network.conf filled in: Internet sockets and the notify-urls credential for instance
    `instance` of scorer@.service alone, for the notify destinations its config.yaml (`settings`) sets."""
    if not INSTANCE_NAME.fullmatch(instance):
        raise ServiceError(f"instance {instance!r} would run as user scorer-{instance}, which cannot be a user "
                           "name: name it with up to 25 lower-case letters, digits, '-' and '_'")
    if not _notifies(settings):
        raise ServiceError(f"{settings.source or 'the configuration'} sets no notify destinations (notify.urls, "
                           f"notify.urls_file), so instance {instance} needs no network: add them first")
    return _read_template(NETWORK_DROPIN).replace("@NETWORK@", _network(settings))


def _read_template(source: Path) -> str:
    if not source.is_file():
        raise ServiceError(f"the unit template {source} is missing: run this from a source checkout "
                           "installed with `pip install -e .`")
    return source.read_text(encoding="utf-8")


def _identity(user: str | None) -> str:
    try:
        account = pwd.getpwnam(user) if user else pwd.getpwuid(os.getuid())
    except KeyError:
        raise ServiceError(f"no user named {user}: create it, or pass --user with an existing account") from None
    return f"User={account.pw_name}\nGroup={grp.getgrgid(account.pw_gid).gr_name}"


def _command(web: bool) -> list[str]:
    script = Path(sys.executable).with_name("scorer")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "scorer"]
    return [*command, "serve" if web else "watch"]


def _install_values(settings: Settings, web: bool, user: str | None) -> tuple[dict[str, str], list[Path]]:
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
        "@IDENTITY@": _identity(user),
        "@WORKDIR@": str(workdir).replace("%", "%%"),  # the whole value is the path: no quotes
        "@EXEC@": " ".join(_unit_quote(part) for part in command),
        "@PATHS@": "ReadWritePaths=" + " ".join(_unit_quote(str(p)) for p in writable),
        "@MOUNTS@": " ".join(_unit_quote(str(p)) for p in (settings.inbox, settings.outbox)),
        "@MPLCONFIGDIR@": _unit_quote(f"MPLCONFIGDIR={settings.state / 'matplotlib'}"),
        "@NETWORK@": _network(settings),
    }, writable


def _instance_values() -> dict[str, str]:
    # %i stays a specifier here: each instance gets its own user, config, folders and model. Writable are
    # exactly what the single unit grants (inbox, outbox, state); the models folder and config are read-only.
    command = _command(False)
    for path in (PurePosixPath(command[0]), PurePosixPath(Path(__file__).resolve().parent)):
        if any(path.is_relative_to(hidden) for hidden in HIDDEN):
            raise ServiceError(f"scorer is installed at {path}, which every instance's namespace hides "
                               f"({' and '.join(HIDDEN)}): install it elsewhere, such as /opt/scorer")
    return {
        # A user of its own: RemoveIPC= may clear all its IPC objects when it stops.
        "@IDENTITY@": f"User={INSTANCE_USER}\nGroup={INSTANCE_USER}\nRemoveIPC=yes",
        "@WORKDIR@": INSTANCE_ROOT,
        "@EXEC@": " ".join(_unit_quote(part) for part in command) + f" --config {INSTANCE_CONFIG}",
        "@PATHS@": "\n".join([
            "TemporaryFileSystem=" + " ".join(f"{hidden}:ro" for hidden in HIDDEN),
            f"BindPaths={INSTANCE_ROOT}/inbox {INSTANCE_ROOT}/outbox {INSTANCE_ROOT}/state",
            f"BindReadOnlyPaths={INSTANCE_ROOT}/models {INSTANCE_ETC}"]),
        "@MOUNTS@": INSTANCE_ROOT,
        "@MPLCONFIGDIR@": f"MPLCONFIGDIR={INSTANCE_ROOT}/state/matplotlib",
        "@NETWORK@": NO_NETWORK,
    }


def _notifies(settings: Settings) -> bool:
    return bool(settings.notify.urls) or settings.notify.urls_file is not None


def _network(settings: Settings) -> str:
    if not _notifies(settings):
        return NO_NETWORK
    lines = ["RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"]
    if settings.notify.urls_file is not None:
        lines.append(f"LoadCredential={CREDENTIAL}:{str(settings.notify.urls_file).replace('%', '%%')}")
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
                     template: bool = False, instance: str | None = None) -> list[str]:
    """The shell commands that render, install and start the unit (with `template`, its first instance, its
    user and folders; with `instance`, that instance's network drop-in)."""
    render = ["scorer", "service"]
    if settings.source is not None:
        render += ["--config", str(settings.source)]
    if user:
        render += ["--user", user]
    if web:
        render.append("--serve")
    if template:
        render.append("--template")
    if instance:
        render += ["--instance", instance]
        dropin = f"/etc/systemd/system/scorer@{instance}.service.d/network.conf"
        return [" ".join(shlex.quote(part) for part in render) + " > network.conf",
                f"sudo install -D -m 644 network.conf {dropin}", "sudo systemctl daemon-reload",
                f"sudo systemctl restart scorer@{instance}"]
    name = "scorer-serve" if web else "scorer@" if template else "scorer"
    started = "scorer@brand-a" if template else name
    return [
        " ".join(shlex.quote(part) for part in render) + f" > {name}.service",
        f"sudo install -m 644 {name}.service /etc/systemd/system/{name}.service",
        *(_instance_setup("brand-a") if template else []),
        "sudo systemctl daemon-reload",
        f"sudo systemctl enable --now {started}",
        f"journalctl -u {started} -f",
    ]


def _instance_setup(name: str) -> list[str]:
    # The instance's user owns what it writes; root owns what it only reads (its models, its config).
    user, root, etc = (value.replace("%i", name) for value in (INSTANCE_USER, INSTANCE_ROOT, INSTANCE_ETC))
    return [
        f"sudo useradd --system --user-group --no-create-home --shell /usr/sbin/nologin {user}",
        f"sudo install -d -m 750 -g {user} {root} {root}/models {etc}",
        f"sudo install -d -m 2770 -o {user} -g {user} {root}/inbox",
        f"sudo install -d -m 2750 -o {user} -g {user} {root}/outbox {root}/state",
        f"# then {etc}/config.yaml and its model, pinned: see docs/hot-folder.md, \"Several brands on one host\"",
    ]


def _unit_quote(text: str) -> str:
    # systemd expands %-specifiers in unit files and splits on spaces unless quoted
    text = text.replace("%", "%%")
    return shlex.quote(text) if any(c in text for c in " \t\"'\\") else text
