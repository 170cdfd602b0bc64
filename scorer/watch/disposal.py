"""Where decided files end up: moved out of the inbox without ever overwriting anything.

Every step can be repeated after a crash: a move that already happened is noticed and
finished, not done twice. Only the watch service writes into the archive and rejected
folders (it holds the state lock), so a name that is free when checked stays free.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import stat
from collections.abc import Collection
from pathlib import Path

from scorer.fsutil import atomic_write, free_name, fsync, sha256_file
from scorer.settings import Settings
from scorer.watch.ledger import Ledger

log = logging.getLogger(__name__)

REASON_SUFFIX = ".reason.txt"


def reason_path(destination: Path) -> Path:
    """The text file beside a rejected file that says why it was rejected."""
    return destination.with_name(destination.name + REASON_SUFFIX)


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
        destination = free_name(destination, taken, reason_path if with_reason else None)
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
    atomic_write(reason_path(destination), reason.rstrip() + "\n", folder=root)


def dispose_pending(ledger: Ledger, settings: Settings) -> None:
    """Move every recorded file that is not yet at its destination, and mark it done."""
    pending = ledger.undisposed()
    taken = {d.destination for d in pending}
    moved: list[tuple[int, Path]] = []
    for d in pending:
        rejected = d.outcome != "scored"
        root = settings.rejected_dir if rejected else settings.archive_dir
        try:
            if not os.path.lexists(d.path) and not os.path.lexists(d.destination):
                log.warning("%s left the inbox before it could be moved to %s", d.path, d.destination)
                moved.append((d.id, d.destination))
                continue
            final = move(d.path, d.destination, d.sha, taken - {d.destination}, root=root, with_reason=rejected)
            if rejected:
                write_reason(final, d.reason, root=root)
        except OSError as exc:
            log.error("cannot move %s to %s (%s): give the service write access to both folders, or set "
                      "'watch.after_scoring: keep' for a read-only inbox", d.path, d.destination, exc.strerror)
            continue
        taken.add(final)
        moved.append((d.id, final))
    if moved:
        ledger.mark_done(moved)


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
    # Another filesystem (an archive on a share): copy under a temporary name, then rename, so the
    # archive never holds half a file under the real name. The temporary sits at the top of the
    # archive (same filesystem), where start-up cleaning looks for leftovers.
    st = os.lstat(source)

    def copy(tmp: Path) -> None:
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(source), tmp)
        elif stat.S_ISREG(st.st_mode):
            shutil.copyfile(source, tmp)
            shutil.copystat(source, tmp)
            fsync(tmp)
        else:
            # A pipe, socket or device cannot be copied; an empty stand-in keeps its name in the folder.
            tmp.touch()

    atomic_write(destination, copy, folder=root)
