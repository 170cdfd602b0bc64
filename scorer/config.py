"""Read config.yaml over the typed defaults in scorer.settings; check folders the settings name.

This is the only module that reads YAML. Every problem becomes a ConfigError
that names the key and the fix, so the CLI can print it on one line.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import types
import typing
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from scorer.errors import ConfigError
from scorer.fsutil import atomic_write
from scorer.settings import Settings

CONFIG_NAME = "config.yaml"


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    """Read config.yaml (or ./config.yaml when it exists) over the defaults.

    `overrides` replace top-level keys after loading, as the CLI's --model and --out do;
    relative override paths resolve against the working directory.
    """
    if path is None and Path(CONFIG_NAME).is_file():
        path = Path(CONFIG_NAME)
    data: dict[str, Any] = {}
    base = Path.cwd()
    if path is not None:
        path = Path(path).absolute()
        if not path.is_file():
            raise ConfigError(f"config file {path} not found: pass --config with the path of config.yaml")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise ConfigError(f"{path} is not valid YAML{where}: fix the syntax there") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must be a mapping of keys to values, like 'inbox: inbox'")
        data = loaded or {}
        base = path.parent
    where = str(path) if path else "the defaults"
    _refuse_renamed(data, where)
    settings: Settings = _build(Settings, data, "", base, where)
    clean = {k: v for k, v in overrides.items() if v is not None}
    for key, value in clean.items():
        if isinstance(getattr(settings, key), Path) or key == "model":
            clean[key] = Path(value).absolute()
    if "model" in clean and clean["model"].resolve() != settings.model.resolve():
        # config's model_sha256 pins config's model; another file named on the command line is checked
        # against its own pin in the state folder (pinned on first use), never against that one.
        clean["model_sha256"] = None
    settings = dataclasses.replace(settings, source=path, **clean)
    _check_relations(settings, where)
    return settings


def _refuse_renamed(data: dict[str, Any], where: str) -> None:
    """A key that became another is refused with the key to write instead, not as merely unknown."""
    if "half" in data:
        fix = ("replace 'half: true' with 'precision: fp16'" if data["half"] is True
               else "remove 'half: false' (fp32 on CUDA is the default)")
        raise ConfigError(f"'half' in {where} is now 'precision': {fix}")


def _build(cls: type, data: dict[str, Any], prefix: str, base: Path, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(
            f"unknown key '{key}' in {where}: remove it or use one of {', '.join(sorted(fields))}"
        )
    values: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}{name}"
        hint: Any = hints[name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            sub = data.get(name) or {}
            if not isinstance(sub, dict):
                raise ConfigError(f"'{key}' in {where} must be a mapping of keys: fix it or remove it")
            values[name] = _build(hint, sub, f"{key}.", base, where)
            continue
        if name in data:
            values[name] = _coerce(data[name], hint, key, base, where, secret=bool(f.metadata.get("secret")))
            minimum = f.metadata.get("min")
            if minimum is not None and values[name] is not None and values[name] < minimum:
                raise ConfigError(f"'{key}' in {where} must be at least {minimum}, got {values[name]}: raise it")
        elif isinstance(f.default, Path):
            values[name] = (base / f.default).absolute()
    return cls(**values)


# How a secret's wrong value is described instead of shown.
_KINDS = {str: "text", list: "a list", dict: "a mapping", int: "a number", float: "a number", bool: "true or false"}


def _coerce(value: Any, hint: Any, key: str, base: Path, where: str, *, secret: bool = False) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key, base, where, secret=secret)

    def bad(expected: str) -> ConfigError:
        # A password or token written in the wrong shape is still a secret: say what it is, never what it says.
        shown = f"{_KINDS.get(type(value), 'a value')} (not shown: it holds secrets)" if secret else repr(value)
        return ConfigError(f"'{key}' in {where} must be {expected}, got {shown}: fix the value")

    if origin is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(map(str, args)))
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise bad("a list, like [a, b]")
        return tuple(_coerce(v, args[0], key, base, where, secret=secret) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("a whole number")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise bad("text")
        return str(value)
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise bad("a path")
        return (base / os.path.expanduser(value)).absolute()
    raise AssertionError(f"unhandled settings type {hint} for {key}")


_MAX_RATIO_THRESHOLD = 20


def _check_relations(s: Settings, where: str) -> None:
    clean = s.train.clean
    if clean.min_comment_ratio > clean.max_comment_ratio:
        raise ConfigError(
            f"'train.clean.min_comment_ratio' is above 'train.clean.max_comment_ratio' in {where}: swap them"
        )
    label = s.train.label
    if label.method == "thresholds":
        if len(label.thresholds) != len(label.classes) - 1:
            raise ConfigError(
                f"'train.label.thresholds' in {where} needs {len(label.classes) - 1} cut points for "
                f"{len(label.classes)} classes, got {len(label.thresholds)}: fix one of the two lists"
            )
        if list(label.thresholds) != sorted(set(label.thresholds)):
            raise ConfigError(f"'train.label.thresholds' in {where} must increase: sort them")
        # Normalised totals are ratios to the account's recent median; counts like 7000 would put every post Low.
        if label.normalize == "rolling_median" and max(label.thresholds) > _MAX_RATIO_THRESHOLD:
            raise ConfigError(
                f"'train.label.thresholds' in {where} are ratios to the rolling median when 'train.label.normalize' "
                f"is rolling_median, like [0.8, 1.25], got {list(label.thresholds)}: "
                "change them or use 'method: quantiles'"
            )
    if len(label.classes) < 2 or len(set(label.classes)) != len(label.classes):
        raise ConfigError(f"'train.label.classes' in {where} needs at least two distinct names")
    if s.classes is not None and len(set(s.classes)) != len(s.classes):
        raise ConfigError(f"'classes' in {where} names a class twice: list each once, lowest first")
    if s.model_sha256 is not None and (len(s.model_sha256) != 64 or not _is_hex(s.model_sha256)):
        raise ConfigError(
            f"'model_sha256' in {where} must be 64 hex digits: run `scorer model pin` to write it"
        )
    if s.video.hook_weight > 1:
        raise ConfigError(f"'video.hook_weight' in {where} is the hook's share of a video's probabilities, "
                          f"from 0 to 1, got {s.video.hook_weight:g}: lower it")
    if not 0 < s.train.valid_pct < 1:
        raise ConfigError(f"'train.valid_pct' in {where} must be between 0 and 1, like 0.2")
    try:
        ZoneInfo(s.context.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"'context.timezone' in {where} is {s.context.timezone!r}, not a time zone: use an IANA "
                          "name such as Europe/Paris or America/New_York (or UTC)") from None


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def require_writable_dir(path: Path, key: str) -> Path:
    """Check that a configured folder exists and a file can be created in it, or say how to fix it."""
    if not path.is_dir():
        raise ConfigError(f"{key} {path} does not exist: create it or change '{key}' in config.yaml")
    try:
        # Permission bits don't tell the whole story (root, read-only mounts, immutable folders): try it.
        with tempfile.TemporaryFile(dir=path, prefix=".~probe"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{key} {path} is not writable ({exc.strerror}): fix its permissions or change '{key}' in config.yaml"
        ) from None
    return path


def require_readable_dir(path: Path, key: str) -> Path:
    """Check that a configured folder exists and can be listed, or say how to fix it."""
    if not path.is_dir():
        raise ConfigError(f"{key} {path} does not exist: create it or change '{key}' in config.yaml")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ConfigError(f"{key} {path} is not readable: fix its permissions or change '{key}' in config.yaml")
    return path


def set_top_level_keys(path: Path, values: dict[str, str]) -> None:
    """Set top-level keys in config.yaml in place, keeping every comment and other line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    for key, value in values.items():
        rendered = f"{key}: {yaml.safe_dump(value, default_style=None).splitlines()[0]}"
        for i, line in enumerate(lines):
            if line.startswith(f"{key}:"):
                comment = line[line.index(" #") + 1:] if " #" in line else ""
                lines[i] = f"{rendered}  {comment}".rstrip()
                break
        else:
            lines.append(rendered)
    atomic_write(path, "\n".join(lines) + "\n")
