"""Where decided files end up: moved out of the inbox without ever overwriting anything.

Every step can be repeated after a crash: a move that already happened is noticed and
finished, not done twice. Only the watch service writes into the archive and rejected
folders (it holds the state lock), so a name that is free when checked stays free.
"""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import stat
from collections.abc import Collection
from pathlib import Path

from scorer.integrity import sha256_file

REASON_SUFFIX = ".reason.txt"
TEMP_PREFIX = ".~"


def reason_path(destination: Path) -> Path:
    """The text file beside a rejected file that says why it was rejected."""
    return destination.with_name(destination.name + REASON_SUFFIX)


def free_name(wanted: Path, taken: Collection[Path], *, with_reason: bool) -> Path:
    """`wanted`, or `stem-2.ext`, `stem-3.ext`, ...: the first name neither on disk nor taken."""
    for n in itertools.count(1):
        candidate = wanted if n == 1 else wanted.with_name(f"{wanted.stem}-{n}{wanted.suffix}")
        clash = os.path.lexists(candidate) or candidate in taken
        if with_reason:
            clash = clash or os.path.lexists(reason_path(candidate))
        if not clash:
            return candidate
    raise AssertionError("unreachable")


def move(source: Path, destination: Path, sha: str | None, taken: Collection[Path], *, root: Path,
         with_reason: bool) -> Path:
    """Move a file to `destination` (or the next free name) under `root`, and return where it is now; safe to repeat.

    If the file was already moved (or removed), nothing happens. If an earlier try copied
    it but died before removing the original, the copy is recognised by its content.
    """
    if not os.path.lexists(source):
        return destination
    if os.path.lexists(destination):
        if _same(source, destination, sha):
            os.unlink(source)
            return destination
        destination = free_name(destination, taken, with_reason=with_reason)
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_across(source, destination, root)
        os.unlink(source)
    return destination


def write_reason(destination: Path, reason: str, *, root: Path) -> None:
    """Write `<name>.reason.txt` beside a rejected file, atomically (the temporary sits at the top of `root`)."""
    path = reason_path(destination)
    tmp = root / f"{TEMP_PREFIX}{path.name}.{os.getpid()}.tmp"
    tmp.write_text(reason.rstrip() + "\n", encoding="utf-8")
    os.replace(tmp, path)


def sync(path: Path) -> None:
    """Flush a file and its folder entry to disk, so a record that says it exists stays true after a power cut."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def remove_stale_temps(folders: Collection[Path]) -> list[Path]:
    """Delete `.~*.tmp` files that a killed process left at the top of these folders; return them."""
    removed = []
    for folder in folders:
        if not folder.is_dir():
            continue
        for path in folder.glob(f"{TEMP_PREFIX}*.tmp"):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _same(source: Path, destination: Path, sha: str | None) -> bool:
    try:
        if os.path.samefile(source, destination):
            return True
        src, dst = os.lstat(source), os.lstat(destination)
    except OSError:
        return False
    if sha is None or not (stat.S_ISREG(src.st_mode) and stat.S_ISREG(dst.st_mode)) or src.st_size != dst.st_size:
        return False
    return sha256_file(destination) == sha


def _copy_across(source: Path, destination: Path, root: Path) -> None:
    # Another filesystem (an archive on a share): copy under a temporary name, then os.replace,
    # so the archive never holds half a file under the real name. The temporary sits at the
    # top of the archive (same filesystem), where start-up cleaning looks for leftovers.
    tmp = root / f"{TEMP_PREFIX}{destination.name}.{os.getpid()}.tmp"
    st = os.lstat(source)
    try:
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), tmp)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(source, tmp)
            shutil.copystat(source, tmp)
            sync(tmp)
        else:
            # A pipe, socket or device cannot be copied; an empty stand-in keeps its name in the folder.
            tmp.touch()
        os.replace(tmp, destination)
    finally:
        tmp.unlink(missing_ok=True)
