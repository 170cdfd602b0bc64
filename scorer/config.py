"""Typed settings: defaults live here, config.yaml only overrides them.

This is the only module that reads YAML. Every problem becomes a ConfigError
that names the key and the fix, so the CLI can print it on one line.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from scorer.errors import ConfigError

CONFIG_NAME = "config.yaml"


def _opt(default: Any, doc: str, *, minimum: float | None = None) -> Any:
    """A settings field with its one-line documentation and an optional lower bound."""
    meta = {"doc": doc, "min": minimum}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class ImageSettings:
    """What the scorer accepts as an image, and how hard it works to decode one."""

    formats: tuple[str, ...] = _opt(("JPEG", "PNG", "WEBP"), "Pillow format names that are accepted")
    max_file_mb: float = _opt(100.0, "larger files are rejected unread", minimum=0.001)
    max_megapixels: float = _opt(100.0, "larger images are rejected before decoding", minimum=0.001)
    decode_workers: int = _opt(2, "decoding processes, overlapped with inference", minimum=1)
    decode_timeout: float = _opt(60.0, "seconds before a file that hangs a decoder is rejected", minimum=1)
    decode_memory_mb: int = _opt(1024, "bound on pixels being decoded at once", minimum=16)


@dataclass(frozen=True)
class ReportSettings:
    """How the Excel report looks."""

    thumbnails: bool = _opt(True, "embed a thumbnail of each creative")
    thumbnail_px: int = _opt(96, "longest side of a thumbnail, in pixels", minimum=16)


@dataclass(frozen=True)
class WatchSettings:
    """The hot-folder service."""

    polling: bool = _opt(False, "poll instead of inotify: set for SMB/NFS shares and sync clients")
    poll_interval: float = _opt(1.0, "seconds between polls when polling", minimum=0.1)
    settle_seconds: float = _opt(2.0, "a file is complete once its size and mtime are unchanged this long; "
                                 "a batch closes once no file has become complete for this long", minimum=0.1)
    rescan_seconds: float = _opt(30.0, "full rescan of the inbox, catches missed events", minimum=0.5)
    max_batch: int = _opt(200, "most files in one batch report", minimum=1)
    max_batch_age: float = _opt(60.0, "seconds after which a growing batch is scored anyway", minimum=0.1)
    after_scoring: Literal["move", "keep"] = _opt(
        "move", "move: archive scored/rejected files; keep: leave them (read-only shares)"
    )
    archive: Path | None = _opt(None, "where scored files go; default outbox/scored (a dated folder inside)")
    rejected: Path | None = _opt(None, "where rejected files go, with <name>.reason.txt; default outbox/rejected")
    latest_days: int = _opt(30, "outbox/latest.xlsx ranks everything scored in this many days", minimum=1)
    max_attempts: int = _opt(3, "a file being scored each time the service died, this many times, is rejected",
                             minimum=1)


@dataclass(frozen=True)
class CleanSettings:
    """The article's rules for dropping posts that were probably advertised."""

    drop_is_ad: bool = _opt(True, "drop posts whose is_ad column is true")
    min_comment_ratio: float = _opt(0.005, "drop posts with comments/likes below this", minimum=0)
    max_comment_ratio: float = _opt(0.02, "drop posts with comments/likes above this", minimum=0)
    max_likes: int = _opt(16000, "drop posts with more likes than this", minimum=0)


@dataclass(frozen=True)
class LabelSettings:
    """How likes + comments become engagement classes."""

    method: Literal["thresholds", "quantiles"] = _opt(
        "thresholds", "thresholds: fixed cut points; quantiles: equal-sized classes"
    )
    thresholds: tuple[float, ...] = _opt(
        (7000.0, 11000.0),
        "cut points on likes+comments, lowest first, one fewer than classes (7000 and 11000 are both Neutral); "
        "ratios such as [0.8, 1.25] with rolling_median",
    )
    classes: tuple[str, ...] = _opt(("Low", "Neutral", "High"), "class names, lowest engagement first")
    normalize: Literal["none", "rolling_median"] = _opt(
        "none", "rolling_median: divide each total by the median of the last `window` posts up to it"
    )
    window: int = _opt(30, "posts in the rolling median", minimum=1)


@dataclass(frozen=True)
class TrainSettings:
    """`scorer train`."""

    arch: str = _opt("resnet34", "a torchvision (or timm, if installed) architecture name")
    pretrained: bool = _opt(True, "start from ImageNet weights (needs the weights file: see README)")
    epochs: int = _opt(3, "fine-tuning epochs; the article saw overfitting after 3", minimum=1)
    image_size: int = _opt(224, "training and scoring size, in pixels", minimum=16)
    batch_size: int = _opt(32, "training batch size", minimum=1)
    learning_rate: float = _opt(0.002, "peak learning rate of the one-cycle schedule", minimum=1e-7)
    workers: int = _opt(0, "processes that decode training images; 0 decodes them in the main process", minimum=0)
    valid_pct: float = _opt(0.2, "share of posts held out (the newest, when dates are known)", minimum=0.01)
    seed: int = _opt(42, "random seed for the split, augmentation and bootstrap")
    bootstrap: int = _opt(1000, "bootstrap resamples for the 95% intervals", minimum=100)
    clean: CleanSettings = _opt(CleanSettings(), "")
    label: LabelSettings = _opt(LabelSettings(), "")


@dataclass(frozen=True)
class Settings:
    """Everything the scorer reads from config.yaml, with paths already resolved."""

    model: Path = _opt(Path("models/demo.pkl"), "the learner saved with learn.export()")
    model_sha256: str | None = _opt(None, "pinned SHA-256 of the model; `scorer model pin` writes it")
    inbox: Path = _opt(Path("inbox"), "the hot folder marketers drop creatives into")
    outbox: Path = _opt(Path("outbox"), "where reports (and archived creatives) go")
    state: Path = _opt(Path("state"), "the ledger, model pins and the ONNX cache live here")
    device: Literal["auto", "cpu", "cuda"] = _opt("auto", "auto picks CUDA when available")
    runtime: Literal["auto", "onnx", "torch"] = _opt("auto", "auto: PyTorch on CUDA, else ONNX Runtime, else PyTorch")
    classes: tuple[str, ...] | None = _opt(None, "the learner's classes, lowest engagement first; inferred when unset")
    threads: int = _opt(0, "CPU threads for inference and training; 0 means all cores", minimum=0)
    batch_size: int = _opt(16, "images per inference batch", minimum=1)
    half: bool = _opt(False, "half precision on CUDA")
    images: ImageSettings = _opt(ImageSettings(), "")
    report: ReportSettings = _opt(ReportSettings(), "")
    watch: WatchSettings = _opt(WatchSettings(), "")
    train: TrainSettings = _opt(TrainSettings(), "")
    source: Path | None = field(default=None, metadata={"internal": True})

    @property
    def archive_dir(self) -> Path:
        """Where `scorer watch` moves scored files."""
        return self.watch.archive or self.outbox / "scored"

    @property
    def rejected_dir(self) -> Path:
        """Where `scorer watch` moves rejected files."""
        return self.watch.rejected or self.outbox / "rejected"

    def describe(self) -> list[str]:
        """The effective settings as `key = value` lines, for the start-up log."""
        return [f"{key} = {value}" for key, value in _flatten(self)]


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            rows += _flatten(value, f"{prefix}{f.name}.")
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
    settings = _build(Settings, data, "", base, where)
    clean = {k: v for k, v in overrides.items() if v is not None}
    for key, value in clean.items():
        if isinstance(getattr(settings, key), Path) or key == "model":
            clean[key] = Path(value).absolute()
    settings = dataclasses.replace(settings, source=path, **clean)
    _check_relations(settings, where)
    return settings


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
            values[name] = _coerce(data[name], hint, key, base, where)
            minimum = f.metadata.get("min")
            if minimum is not None and values[name] is not None and values[name] < minimum:
                raise ConfigError(f"'{key}' in {where} must be at least {minimum}, got {values[name]}: raise it")
        elif isinstance(f.default, Path):
            values[name] = (base / f.default).absolute()
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str, base: Path, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key, base, where)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"'{key}' in {where} must be {expected}, got {value!r}: fix the value")

    if origin is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(map(str, args)))
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise bad("a list, like [a, b]")
        return tuple(_coerce(v, args[0], key, base, where) for v in value)
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
    if not 0 < s.train.valid_pct < 1:
        raise ConfigError(f"'train.valid_pct' in {where} must be between 0 and 1, like 0.2")


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
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, path)
