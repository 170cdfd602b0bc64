"""Ship the verified model to Ray workers and check it there before it is unpickled.

The driver reads the learner (and its ONNX export, checked against its pin) once and
puts the bytes in Ray's object store, so a worker on another machine never needs the
driver's files or the network. The worker checks the bytes against the pin it is given
beside them (`model_sha256` from the driver's config.yaml, else the pin the driver
checked): a SHA-256 travelling inside the shipped object vouches for nothing, since
whoever altered the bytes could recompute it. It then writes them into a private folder
and opens them with the same Classifier as `scorer score`: `verify_model` compares them
with that pin again before fastai unpickles anything, and the ONNX cache is used only
when its own pin matches.

When the driver holds the learner's fast start (scorer.model.fast_start), the fast start travels
beside the shipped object too, and pins the export in it: a worker that gets both opens the
export with the fast start, without fastai or PyTorch, as `scorer score` does on its second start.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from scorer.fsutil import atomic_write, sha256_bytes
from scorer.model.fast_start import FastStart, keep_fast_start
from scorer.model.integrity import PinMismatch, derived_pin, model_pin_place, read_pinned, remember_derived
from scorer.model.runtime import onnx_cache_path
from scorer.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShippedModel:
    """A learner's bytes and, when scoring runs on ONNX, the checked export: no hash, since one inside would
    vouch for nothing."""

    name: str
    learner: bytes
    onnx: bytes | None = None
    onnx_name: str = ""
    onnx_kind: str = ""
    card: bytes | None = None


def pack_model(settings: Settings, sha256: str) -> ShippedModel:
    """Read the model the driver has just verified (and its ONNX export, if one was made) for shipping."""
    learner = read_pinned(settings.model, sha256, f"model {settings.model}",
                          "it changed while it was being loaded: run again", where=model_pin_place(settings))
    onnx, name, kind = None, "", ""
    folders = (settings.model.parent, settings.state / "onnx")
    for folder, embedding in ((folder, embedding) for folder in folders for embedding in (True, False)):
        path = onnx_cache_path(settings.model, sha256, folder, embedding)
        kind = "onnx-embedding" if embedding else "onnx"
        pinned = derived_pin(settings, kind, sha256)
        if pinned is not None and path.is_file():
            try:  # the export the driver's Classifier just checked
                onnx, name = read_pinned(path, pinned, f"ONNX cache {path}", "not shipped"), path.name
                break
            except PinMismatch:
                continue
    card = settings.model.with_suffix(".card.json")
    return ShippedModel(settings.model.name, learner, onnx, name, kind,
                        card.read_bytes() if card.is_file() else None)


def unpack_model(shipped: ShippedModel, settings: Settings, verified: str,
                 fast_start: FastStart | None = None) -> Settings:
    """Check a shipped model against the driver's pin, write it into this worker's private folder; settings to load it.

    The pin is `model_sha256` in the driver's settings when set, else `verified` (the SHA-256 the
    driver checked against its state folder's pin); both travel beside the shipped object, not in it,
    as does the driver's `fast_start`, which is kept here only for the export it names.
    """
    pin = (settings.model_sha256 or verified).lower()
    where = "model_sha256 in config.yaml" if settings.model_sha256 else "the driver's state folder"
    read_pinned(shipped.learner, pin, "the model shipped to this worker", "refused unopened; run again, and if it "
                "happens again check the nodes and the network between them", where=where)
    folder = _private_root() / pin[:16]
    folder.mkdir(exist_ok=True, mode=0o700)
    model = folder / shipped.name
    _put(model, shipped.learner)
    local = dataclasses.replace(settings, model=model, model_sha256=pin, state=folder / "state",
                                inbox=folder / "inbox", outbox=folder / "outbox")
    if shipped.onnx is not None:
        _put(folder / shipped.onnx_name, shipped.onnx)  # the same cache name, since the model keeps its name
        # pinned in this worker's state folder; the Classifier still checks its outputs against PyTorch, or
        # against the logits this worker recorded when it checked these very bytes (scorer.model.fast_start)
        onnx_sha = sha256_bytes(shipped.onnx)
        remember_derived(local, shipped.onnx_kind, pin, onnx_sha)
        if fast_start is not None and fast_start.onnx_sha256 == onnx_sha:
            keep_fast_start(local.state, pin, fast_start)  # the export the driver checked: opened without fastai
    if shipped.card is not None:
        _put(model.with_suffix(".card.json"), shipped.card)
    return local


def _private_root() -> Path:
    """`<tmp>/scorer-bulk-<uid>` when it is this user's own folder, private and not a link; else a fresh one.

    Another user may create the fixed name first (as a folder, or a link to one they can read):
    anything but our own 0700 folder is left alone, and this worker uses an unguessable mkdtemp.
    """
    root = Path(tempfile.gettempdir()) / f"scorer-bulk-{os.getuid()}"
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(root)  # a sticky temp folder keeps others from swapping it once it is ours
    if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077:
        return root
    fresh = Path(tempfile.mkdtemp(prefix="scorer-bulk-"))
    log.warning("%s is not a private folder of this user, so it is not used: the model goes to %s; "
                "remove %s to reuse one folder across runs", root, fresh, root)
    return fresh


def _put(path: Path, data: bytes) -> None:
    if not path.is_file() or path.read_bytes() != data:
        atomic_write(path, data)
    os.chmod(path, 0o600)
