"""Model integrity: a learner file is a pickle, so only a file we trust may be loaded.

A file is trusted when its SHA-256 matches its pin: `model_sha256` in config.yaml when
set, otherwise the pin kept in the state folder (set on first use, or by `scorer train`).
The file is read once: the bytes that are hashed are the bytes that are unpickled, so the
file cannot be swapped between the check and the load. Artefacts derived from a model
(its ONNX export, its int8 copy) are pinned in the state folder too (`remember_derived`, `derived_pin`).
Every pin, whatever file it vouches for, is checked by `read_pinned`.
The model's evidence index and combined model (scorer.context) are pinned beside it in the state folder;
`scorer model pin` trusts all three.
"""

from __future__ import annotations

import io
import json
import logging
import os
import stat
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scorer.config import set_top_level_keys
from scorer.context.combined import context_path
from scorer.errors import ConfigError, ModelError
from scorer.evidence.index import index_path
from scorer.fsutil import atomic_write, read_regular, sha256_bytes, sha256_file
from scorer.settings import Settings

log = logging.getLogger(__name__)

PINS_FILE = "model-pins.json"
DERIVED_FILE = "derived-pins.json"


class PinMismatch(ModelError):
    """A file's bytes are not those its pin vouches for."""


def read_pinned(source: Path | bytes, pin: str, what: str, fix: str, *, where: str = "the state folder") -> bytes:
    """The bytes of a regular file, read once (or bytes already received), refused unless their SHA-256 is `pin`.

    `what` names them in the refusal, `where` says where the pin is kept and `fix` what to do; the bytes
    returned are the ones that were hashed, so nothing can be swapped between the check and the use.
    """
    data = read_regular(source) if isinstance(source, Path) else source
    sha = sha256_bytes(data)
    if sha != pin.lower():
        raise PinMismatch(f"{what} has changed since it was pinned (sha256 {sha[:12]}…, pinned {pin[:12]}… in "
                          f"{where}): {fix}")
    return data


@dataclass(frozen=True)
class TrustedModel:
    """A model file's bytes, read once, and their SHA-256, which matched the pin."""

    sha256: str
    data: bytes


def _pins_path(settings: Settings) -> Path:
    return settings.state / PINS_FILE


def _read_pins(settings: Settings) -> dict[str, str]:
    path = _pins_path(settings)
    if not path.is_file():
        return {}
    try:
        pins = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise ModelError(f"{path} is damaged: delete it, then run `scorer model pin` on the trusted model") from None
    return {str(k): str(v) for k, v in pins.items()}


def remember_pin(settings: Settings, model: Path, sha256: str) -> None:
    """Keep a model's pin in the state folder, written atomically."""
    settings.state.mkdir(parents=True, exist_ok=True)
    pins = _read_pins(settings)
    pins[str(model.resolve())] = sha256
    atomic_write(_pins_path(settings), json.dumps(pins, indent=2, sort_keys=True))


def verify_model(settings: Settings) -> TrustedModel:
    """Read the configured model file once, check it may be loaded, and return its bytes and SHA-256.

    Refuses a missing file, a file inside the inbox or outbox, a file or folder others can write,
    and a file whose hash differs from its pin. Pins it on first use when nothing is pinned.
    """
    model = settings.model
    if not model.exists():
        raise ConfigError(
            f"model {model} does not exist: run `scorer demo` or `scorer train`, or set 'model' in config.yaml"
        )
    real = _check_place(settings, model)
    return _trust(settings, model, real, settings.model_sha256 or _read_pins(settings).get(str(real)), "model",
                  f"if you trust the new file, run `scorer model pin {model}`", model_pin_place(settings),
                  lambda data: refuse_unless_export(model, data))


def model_pin_place(settings: Settings) -> str:
    """Where the configured model's pin is kept, in a refusal's words."""
    return "model_sha256 in config.yaml" if settings.model_sha256 else f"{_pins_path(settings)}"


def _trust(settings: Settings, path: Path, real: Path, pinned: str | None, what: str, fix: str,
           where: str, vet: Callable[[bytes], None] = lambda data: None) -> TrustedModel:
    """A pinned file's bytes checked against `pinned`, or, with nothing pinned yet, `vet`ted and pinned on first
    use (a file that is not what it should be is refused before it is pinned)."""
    if pinned is not None:
        return TrustedModel(pinned.lower(), read_pinned(real, pinned, f"{what} {path}", fix, where=where))
    data = read_regular(real)
    vet(data)
    sha = sha256_bytes(data)
    remember_pin(settings, path, sha)
    log.warning("%s %s pinned on first use: sha256 %s", what, path, sha)
    return TrustedModel(sha, data)


def _check_place(settings: Settings, model: Path) -> Path:
    """The model's real path, once it is known to be a regular file outside the drop folders that no other user
    can change. The advice never touches a folder other users share: changing /tmp's mode breaks the machine."""
    real = model.resolve()
    for folder, key in ((settings.inbox, "inbox"), (settings.outbox, "outbox")):
        if real.is_relative_to(folder.resolve()):
            raise ModelError(f"model {model} is inside the {key}, where anyone may drop files: move it to models/")
    st = real.stat()
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"model {model} is not a file: set 'model' in config.yaml to the exported .pkl")
    folder = real.parent
    folder_writable = folder.stat().st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    # Whoever can write the folder can swap the file for another between two starts.
    if (folder_writable and _shared(folder)) or (st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
                                                  and st.st_uid != os.geteuid()):
        raise ModelError(f"model {model} is in {folder}, where other users can change it: copy it into a folder "
                         f"that only you can write, such as {_own_folder(settings)}, and use that copy")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ModelError(f"model {model} can be written by group or others: run `chmod go-w {model}`")
    if folder_writable:
        raise ModelError(f"the model's folder {folder} can be written by group or others: run `chmod go-w {folder}`, "
                         "or move the model to a folder only its owner can write")
    return real


# Folders every user of the machine writes in, whatever their mode says.
_SYSTEM_FOLDERS = frozenset(Path(p) for p in ("/", "/tmp", "/var/tmp", "/dev/shm"))


def _shared(folder: Path) -> bool:
    """Whether a folder belongs to everyone (sticky, world-writable, a system folder) or to another user."""
    st = folder.stat()
    return (folder in _SYSTEM_FOLDERS or bool(st.st_mode & (stat.S_ISVTX | stat.S_IWOTH))
            or st.st_uid != os.geteuid())


def _own_folder(settings: Settings) -> Path:
    """Where to keep a model: models/ beside config.yaml, or in the home folder when that place is shared too."""
    base = settings.source.parent if settings.source else Path.cwd()
    mode = base.stat().st_mode if base.is_dir() else 0
    return Path.home() / "models" if mode & (stat.S_IWGRP | stat.S_IWOTH) else base / "models"


def _derived_path(settings: Settings) -> Path:
    return settings.state / DERIVED_FILE


def derived_pin(settings: Settings, kind: str, model_sha256: str) -> str | None:
    """The SHA-256 pinned in the state folder for an artefact derived from a model (kind: "onnx")."""
    path = _derived_path(settings)
    if not path.is_file():
        return None
    try:
        pins = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        log.warning("%s is damaged: derived artefacts are made again", path)
        return None
    value = pins.get(f"{kind}:{model_sha256}")
    return str(value) if value else None


def remember_derived(settings: Settings, kind: str, model_sha256: str, sha256: str) -> None:
    """Pin an artefact derived from a model in the state folder, written atomically."""
    settings.state.mkdir(parents=True, exist_ok=True)
    path = _derived_path(settings)
    try:
        pins = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except json.JSONDecodeError:
        pins = {}
    pins[f"{kind}:{model_sha256}"] = sha256
    atomic_write(path, json.dumps(pins, indent=2, sort_keys=True))


def verify_index(settings: Settings, index: Path) -> bytes:
    """Read an evidence index once, check it against its pin (pinning it on first use), and return its bytes."""
    return _verify_pinned(settings, index, "evidence index",
                          f"rebuild it with `scorer index DATA --model {settings.model}`")


def verify_context(settings: Settings, path: Path) -> bytes:
    """Read a combined model (scorer.context) once, check it against its pin, and return its bytes."""
    return _verify_pinned(settings, path, "combined model", "train again with `scorer train`")


def _verify_pinned(settings: Settings, path: Path, what: str, rebuild: str) -> bytes:
    real = path.resolve()
    fix = f"{rebuild}, or if you trust the new file, run `scorer model pin {settings.model}`"
    return _trust(settings, path, real, _read_pins(settings).get(str(real)), what, fix, f"{_pins_path(settings)}").data


@dataclass(frozen=True)
class Pinned:
    """What `scorer model pin` wrote to config.yaml and the state folder."""

    sha256: str
    config: Path
    switched_from: Path | None  # the model config.yaml named before, when pinning made it name this one
    derived: list[Path]  # the evidence index and combined model beside it, pinned with it


def pin_model(settings: Settings, model: Path) -> Pinned:
    """Pin a trusted model: write model_sha256 (and model) to config.yaml and the state folder."""
    if not model.is_file():
        raise ConfigError(f"model {model} does not exist: give the path of the exported .pkl")
    if settings.source is None:
        raise ConfigError("no config.yaml to write the pin to: run from the project folder or pass --config")
    real = _check_place(settings, model)
    data = read_regular(real)
    refuse_unless_export(model, data)
    sha = sha256_bytes(data)
    values = {"model_sha256": sha}
    switched = real != settings.model.resolve()
    if switched:
        values["model"] = os.path.relpath(real, settings.source.parent)
    set_top_level_keys(settings.source, values)
    remember_pin(settings, model, sha)
    derived = [path for path in (index_path(model), context_path(model)) if path.is_file()]
    for path in derived:
        remember_pin(settings, path, sha256_file(path.resolve()))
    return Pinned(sha, settings.source, settings.model if switched else None, derived)


_MAGIC = ((b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
          (b"%PDF", "a PDF document"), (b"\x1f\x8b", "a gzip archive"),
          # torch.save before PyTorch 1.6: a pickled magic number, then pickles
          (b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19",
           "a PyTorch file in the format before PyTorch 1.6"),
          (b"\x80", "a plain pickle, not a PyTorch file"))


def refuse_unless_export(model: Path, data: bytes) -> None:
    """Refuse a file that is not a learner saved with learn.export(), saying what it is."""
    if (what := not_an_export(data)) is not None:
        raise ModelError(f"{model} is {what}, not a learner saved with fastai's learn.export(): pass the .pkl "
                         "file that learn.export() wrote")


def not_an_export(data: bytes) -> str | None:
    """What a file is, when it is not a learner saved with learn.export(); None when it is one. Nothing is
    unpickled: learn.export() writes a torch.save zip archive whose data.pkl names fastai's Learner."""
    if not data:
        return "an empty file"
    if not data.startswith(b"PK\x03\x04"):
        kind = next((what for magic, what in _MAGIC if data.startswith(magic)), None)
        return kind or ("a text file" if _is_text(data[:4096]) else "neither a zip archive nor a pickle")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            pickles = [name for name in archive.namelist() if name.rpartition("/")[2] == "data.pkl"]
            if not pickles:
                return "a zip archive without data.pkl, not a PyTorch file"
            with archive.open(pickles[0]) as member:
                # the pickle alone, the weights are beside it: small, and bounded should it be a zip bomb
                head = member.read(1 << 24)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
        return "a damaged zip archive"
    if b"fastai.learner" not in head:
        return "a PyTorch file without a fastai Learner in it (a model or weights saved with torch.save?)"
    return None


def _is_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not merely a character cut at the end of the sample
            return False
    return b"\0" not in head
