"""The settings as text: the start-up log's lines, and every key with its documentation for the reference."""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scorer.settings import Settings


def log_settings(settings: Settings, log: logging.Logger) -> None:
    """Log the settings in effect at start-up: those that differ from the defaults, all of them with -v."""
    for line in describe_settings(settings, everything=log.isEnabledFor(logging.DEBUG)):
        log.info("%s", line)


def describe_settings(settings: Settings, everything: bool = False) -> list[str]:
    """The settings in effect, for the start-up log: where they come from, then a line per section of those
    that differ from the defaults (paths as resolved against the config's folder), or of all of them."""
    base = settings.source.parent if settings.source else Path.cwd()
    defaults = dict(_flatten(Settings()))
    rows = _flatten(settings)
    changed = [(key, value) for key, value in rows if value != _resolved(defaults[key], base)]
    sections: dict[str, list[str]] = {}
    for key, value in rows if everything else changed:
        sections.setdefault(key.partition(".")[0] if "." in key else "", []).append(f"{key} = {value}")
    where = f"from {settings.source}" if settings.source else "(no config.yaml)"
    if everything:
        head = f"settings {where}: all {len(rows)}, {len(changed)} of them not at their defaults"
    elif changed:
        head = f"settings {where}: {len(changed)} of {len(rows)} differ from the defaults (-v shows all)"
    else:
        head = f"settings {where}: all {len(rows)} at their defaults (-v shows them)"
    return [head, *(f"settings: {'; '.join(items)}" for items in sections.values())]


def _resolved(default: Any, base: Path) -> Any:
    """A default as load_settings makes it: a relative path resolved against the config's folder."""
    return (base / default).absolute() if isinstance(default, Path) else default


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            rows += _flatten(value, f"{prefix}{f.name}.")
        elif f.metadata.get("secret") and value:
            rows.append((f"{prefix}{f.name}", "(set, not shown)"))
        else:
            rows.append((f"{prefix}{f.name}", value))
    return rows


def documented_keys(cls: type = Settings, prefix: str = "") -> list[tuple[str, str, Any]]:
    """Every config key with its documentation and default, for docs and their tests."""
    rows: list[tuple[str, str, Any]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        if dataclasses.is_dataclass(hints[f.name]):
            rows += documented_keys(hints[f.name], f"{prefix}{f.name}.")
        else:
            factory: Callable[[], Any] = f.default_factory  # type: ignore[assignment]
            default = f.default if f.default is not dataclasses.MISSING else factory()
            rows.append((f"{prefix}{f.name}", f.metadata["doc"], default))
    return rows
