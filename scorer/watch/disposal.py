"""Where decided files end up: moved out of the inbox without ever overwriting anything.

Every step can be repeated after a crash: a move that already happened is noticed and
finished, not done twice. Only the watch service writes into the archive and rejected
folders (it holds the state lock), so a name that is free when checked stays free.

A file is moved only while it is still the file that was decided: same SHA-256 (or, for a
file that has none, the same size and mtime), and the same inode from the check to the
rename. A file replaced under the same name is new input; it stays in the inbox.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import BinaryIO

from scorer.context.plan import SIDECAR_SUFFIXES, is_context_name
from scorer.fsutil import (
    atomic_write,
    ensure_dir,
    free_name,
    open_regular,
    sha256_file,
    sha256_handle,
    shorten_name,
    temp_path,
)
from scorer.ledger.schema import Candidate, Entry
from scorer.ledger.store import Disposal, Ledger
from scorer.results import Progress
from scorer.settings import Settings
from scorer.textsafe import log_text

log = logging.getLogger(__name__)

REASON_SUFFIX = ".reason.txt"
# Room kept in a destination's name for `-NN` after a clash and the reason file's suffix.
_NAME_ROOM = len(REASON_SUFFIX) + 8


def reason_path(destination: Path) -> Path:
    """The text file beside a rejected file that says why it was rejected."""
    return destination.with_name(destination.name + REASON_SUFFIX)


def fitting(destination: Path) -> Path:
    """`destination` with its stem cut so the name, a clash number and `.reason.txt` fit in 255 bytes."""
    suffix = destination.suffix if len(os.fsencode(destination.suffix)) <= 16 else ""
    stem = destination.name[: len(destination.name) - len(suffix)] if suffix else destination.name
    return destination.with_name(shorten_name(stem, _NAME_ROOM + len(os.fsencode(suffix))) + suffix)


def reserved(destinations: Iterable[tuple[Path, bool]]) -> set[Path]:
    """Names already promised: each destination and, for a rejected file, its reason file."""
    names: set[Path] = set()
    for destination, rejected in destinations:
        names.add(destination)
        if rejected:
            names.add(reason_path(destination))
    return names


def move(source: Path, destination: Path, decided: Entry, taken: Collection[Path], *, root: Path,
         with_reason: bool, progress: Progress = lambda n: None) -> Path | None:
    """Move the decided file to `destination` (or the next free name) under `root`; return where it is now.

    None when the file at `source` is no longer the one decided (replaced under the same name): it
    stays where it is. If the file was already moved (or removed), nothing happens. If an earlier
    try copied it but died before removing the original, the copy is recognised and not made again.
    """
    if not os.path.lexists(source):
        return destination
    if os.path.lexists(destination):
        if _same(source, destination, decided):
            os.unlink(source)
            return destination
        destination = free_name(destination, taken, reason_path if with_reason else None)
    ensure_dir(root, destination.parent)
    st = os.lstat(source)
    if not stat.S_ISREG(st.st_mode):
        if not _unchanged(st, decided.candidate):
            return None
        return _rename_or_copy(source, destination, None, st, root, progress)
    with open_regular(source) as handle:
        opened = os.fstat(handle.fileno())
        # The hash decides when there is one (it is what was scored); size and mtime only when there is none.
        if (sha256_handle(handle) != decided.sha) if decided.sha else not _unchanged(opened, decided.candidate):
            return None
        return _rename_or_copy(source, destination, handle, opened, root, progress)


def _rename_or_copy(source: Path, destination: Path, handle: BinaryIO | None, st: os.stat_result, root: Path,
                    progress: Progress) -> Path | None:
    try:
        os.rename(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_across(source, destination, handle, st, root, progress)
        now = os.lstat(source)
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(source)
        return destination
    moved = os.lstat(destination)
    if (moved.st_dev, moved.st_ino) != (st.st_dev, st.st_ino):
        # Replaced between the check and the rename: the newcomer goes back to the inbox.
        os.rename(destination, source if not os.path.lexists(source) else free_name(source))
        return None
    return destination


def write_reason(destination: Path, reason: str, *, root: Path) -> None:
    """Write `<name>.reason.txt` beside a rejected file, atomically (the temporary sits at the top of `root`)."""
    atomic_write(reason_path(destination), reason.rstrip() + "\n", folder=root)


def dispose_pending(ledger: Ledger, settings: Settings, progress: Progress = lambda n: None) -> OSError | None:
    """Move every recorded file that is not yet at its destination, and mark it done.

    A file that cannot be moved now (a permission, a full disk) is logged and left for a later
    try; the last such error is returned, None when every move went through.
    """
    failed: OSError | None = None
    pending = ledger.undisposed()
    taken = reserved((d.destination, d.entry.decision != "scored") for d in pending)
    moved: list[tuple[int, Path]] = []
    replaced: list[int] = []
    # A rejected sidecar is an entry of its own and goes to the rejected folder, not with its creative.
    sidecars_decided = {d.entry.candidate.path for d in pending}
    for d in pending:
        rejected = d.entry.decision != "scored"
        try:
            final = _dispose(d, settings, taken, sidecars_decided, progress)
        except OSError as exc:
            log.error("cannot move %s to %s (%s): give the service write access to both folders, or set "
                      "'watch.after_scoring: keep' for a read-only inbox", log_text(str(d.entry.candidate.path)),
                      d.destination, exc.strerror or exc)
            failed = exc
            continue
        if final is None:
            replaced.append(d.id)
            continue
        taken |= reserved([(final, rejected)])
        moved.append((d.id, final))
    if moved:
        ledger.mark_done(moved)
    if replaced:
        ledger.mark_replaced(replaced)
    return failed


def _dispose(d: Disposal, settings: Settings, taken: set[Path], sidecars_decided: Collection[Path],
             progress: Progress) -> Path | None:
    """Move one decided file with its sidecars (and a rejected one's reason); where it is now, None if replaced."""
    source, rejected = d.entry.candidate.path, d.entry.decision != "scored"
    root = settings.rejected_dir if rejected else settings.archive_dir
    if not os.path.lexists(source) and not os.path.lexists(d.destination):
        log.warning("%s left the inbox before it could be moved to %s", log_text(str(source)), d.destination)
        return d.destination
    carry_sidecars(source, d.destination, root, skip=sidecars_decided)
    own = reserved([(d.destination, rejected)])
    final = move(source, d.destination, d.entry, taken - own, root=root, with_reason=rejected, progress=progress)
    if final is None:
        log.warning("%s was replaced after it was decided: the new file stays in the inbox and gets its own result",
                    log_text(str(source)))
    elif rejected:
        write_reason(final, d.entry.reason, root=root)
    return final


def carry_sidecars(source: Path, destination: Path, root: Path, skip: Collection[Path] = ()) -> None:
    """Move a creative's sidecars (`<stem>.json`, `<stem>.txt`: scorer.context.plan) to where it goes, first.

    Moved before the creative, so a crash between the two leaves nothing behind: at the restart the
    creative's move is repeated and finds its sidecars already gone.
    """
    if is_context_name(source.name):
        return
    for suffix in SIDECAR_SUFFIXES:
        sidecar = source.with_suffix(suffix)
        if sidecar in skip or not os.path.lexists(sidecar) or not stat.S_ISREG(os.lstat(sidecar).st_mode):
            continue
        ensure_dir(root, destination.parent)
        target = free_name(destination.with_suffix(suffix))
        with open_regular(sidecar) as handle:  # the creatives' own move: rename, or copy across filesystems
            moved = _rename_or_copy(sidecar, target, handle, os.fstat(handle.fileno()), root, lambda n: None)
        if moved is not None:
            log.info("%s goes with its creative: %s", log_text(sidecar.name), moved)


def _unchanged(st: os.stat_result, decided: Candidate) -> bool:
    if decided.size is None or decided.mtime_ns is None:
        return True
    return (st.st_size, st.st_mtime_ns) == (decided.size, decided.mtime_ns)


def _same(source: Path, destination: Path, decided: Entry) -> bool:
    """Whether `destination` already holds the decided file (an earlier try's copy or rename)."""
    try:
        if os.path.samefile(source, destination):
            return True
        src, dst = os.lstat(source), os.lstat(destination)
    except OSError:
        return False
    if not (stat.S_ISREG(src.st_mode) and stat.S_ISREG(dst.st_mode)) or src.st_size != dst.st_size:
        return False
    if decided.sha is None:
        # No hash (too large to read at intake): a copy keeps the size and mtime it was decided with.
        file = decided.candidate
        return file.size is not None and _unchanged(src, file) and _unchanged(dst, file)
    return sha256_file(destination) == decided.sha


def _copy_across(source: Path, destination: Path, handle: BinaryIO | None, st: os.stat_result, root: Path,
                 progress: Progress) -> None:
    # Another filesystem (an archive on a share): copy under a temporary name, then rename, so the
    # archive never holds half a file under the real name. The temporary sits at the top of the
    # archive (same filesystem), where start-up cleaning looks for leftovers. Copying from the
    # descriptor that was checked copies the decided bytes, whatever the name holds now.
    if handle is not None:
        handle.seek(0)
        atomic_write(destination, handle, folder=root, progress=progress)
        os.utime(destination, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    elif stat.S_ISLNK(st.st_mode):
        tmp = temp_path(destination, root)
        os.symlink(os.readlink(source), tmp)
        os.replace(tmp, destination)
    else:
        # A pipe, socket or device cannot be copied; an empty stand-in keeps its name in the folder.
        atomic_write(destination, b"", folder=root)
