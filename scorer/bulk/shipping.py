"""Ship the verified model to Ray workers and check it there before it is unpickled.

The driver reads the learner (and its ONNX export, checked against its pin) once and
puts the bytes in Ray's object store, so a worker on another machine never needs the
driver's files or the network. The worker writes them into a private folder and opens
them with the same Classifier as `scorer score`: `verify_model` compares the bytes with
the pinned SHA-256 before fastai unpickles anything, and the ONNX cache is used only when
its own pin matches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scorer.errors import ModelError
from scorer.fsutil import atomic_write
from scorer.scoring.integrity import derived_pin, remember_derived
from scorer.scoring.runtime import onnx_cache_path
from scorer.settings import Settings


@dataclass(frozen=True)
class ShippedModel:
    """A learner's bytes, their pinned SHA-256 and, when scoring runs on ONNX, the checked export."""

    name: str
    sha256: str
    learner: bytes
    onnx: bytes | None = None
    onnx_name: str = ""
    onnx_kind: str = ""
    card: bytes | None = None


def pack_model(settings: Settings, sha256: str) -> ShippedModel:
    """Read the model the driver has just verified (and its ONNX export, if one was made) for shipping."""
    learner = settings.model.read_bytes()
    if hashlib.sha256(learner).hexdigest() != sha256:
        raise ModelError(f"model {settings.model} changed while it was being loaded: run again")
    onnx, name, kind = None, "", ""
    folders = (settings.model.parent, settings.state / "onnx")
    for folder, features in ((folder, features) for folder in folders for features in (True, False)):
        path = onnx_cache_path(settings.model, sha256, folder, features)
        kind = "onnx-features" if features else "onnx"
        pinned = derived_pin(settings, kind, sha256)
        if pinned is not None and path.is_file():
            data = path.read_bytes()
            if hashlib.sha256(data).hexdigest() == pinned:  # the export the driver's Classifier just checked
                onnx, name = data, path.name
                break
    card = settings.model.with_suffix(".card.json")
    return ShippedModel(settings.model.name, sha256, learner, onnx, name, kind,
                        card.read_bytes() if card.is_file() else None)


def unpack_model(shipped: ShippedModel, settings: Settings) -> Settings:
    """Write a shipped model into a private folder on this worker; the settings that load it from there.

    The returned settings pin the SHA-256 the driver verified, so the Classifier refuses the
    bytes if they were altered on the way or on this machine's disk.
    """
    folder = Path(tempfile.gettempdir()) / f"scorer-bulk-{os.getuid()}" / shipped.sha256[:16]
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder.parent, 0o700)
    model = folder / shipped.name
    _put(model, shipped.learner)
    local = dataclasses.replace(settings, model=model, model_sha256=shipped.sha256, state=folder / "state",
                                inbox=folder / "inbox", outbox=folder / "outbox")
    if shipped.onnx is not None:
        _put(folder / shipped.onnx_name, shipped.onnx)  # the same cache name, since the model keeps its name
        # pinned in this worker's state folder; the Classifier still checks its outputs against PyTorch
        remember_derived(local, shipped.onnx_kind, shipped.sha256, hashlib.sha256(shipped.onnx).hexdigest())
    if shipped.card is not None:
        _put(model.with_suffix(".card.json"), shipped.card)
    return local


def _put(path: Path, data: bytes) -> None:
    if not path.is_file() or path.read_bytes() != data:
        atomic_write(path, data)
    os.chmod(path, 0o600)
