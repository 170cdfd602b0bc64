"""Moving decided files: never overwrite, survive a repeat after a crash, cross filesystems via a temp name."""

from __future__ import annotations

import errno
import hashlib
import os
import re
from pathlib import Path

import pytest

import scorer
from scorer import fsutil
from scorer.fsutil import free_name, remove_temps
from scorer.ledger.schema import Candidate, Entry
from scorer.watch import disposal
from scorer.watch.disposal import move, reason_path, write_reason


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decided(path: Path, *, hashed: bool = True) -> Entry:
    """What the ledger holds for `path` as it is now: its SHA-256 (or none, as for a huge file), size and mtime."""
    st = os.lstat(path)
    digest = sha(path.read_bytes()) if hashed and path.is_file() and not path.is_symlink() else None
    return Entry(Candidate(path, path.name, digest, st.st_size, st.st_mtime_ns), "scored", destination=path)


def test_free_name_never_reuses_a_name(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "a-2.jpg.reason.txt").write_text("left behind")
    assert free_name(tmp_path / "b.jpg", set(), reason_path) == tmp_path / "b.jpg"
    assert free_name(tmp_path / "a.jpg", set()) == tmp_path / "a-2.jpg"
    assert free_name(tmp_path / "a.jpg", set(), reason_path) == tmp_path / "a-3.jpg"
    assert free_name(tmp_path / "a.jpg", {tmp_path / "a-2.jpg", tmp_path / "a-3.jpg"}) == tmp_path / "a-4.jpg"


def test_move_on_a_clash_keeps_both(tmp_path: Path) -> None:
    src, dest = tmp_path / "in/a.jpg", tmp_path / "out/a.jpg"
    src.parent.mkdir()
    dest.parent.mkdir()
    src.write_bytes(b"new")
    dest.write_bytes(b"old")
    final = move(src, dest, decided(src), set(), root=tmp_path / "out", with_reason=False)
    assert final == tmp_path / "out/a-2.jpg" and final.read_bytes() == b"new"
    assert dest.read_bytes() == b"old" and not src.exists()


def test_move_repeated_after_a_crash_finishes_instead_of_copying_twice(tmp_path: Path) -> None:
    src, dest = tmp_path / "a.jpg", tmp_path / "out/sub/a.jpg"
    src.write_bytes(b"content")
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"content")  # an earlier try copied it and died before removing the original
    what = decided(src)
    assert move(src, dest, what, set(), root=tmp_path / "out", with_reason=False) == dest
    assert not src.exists() and sorted(p.name for p in dest.parent.iterdir()) == ["a.jpg"]
    assert move(src, dest, what, set(), root=tmp_path / "out", with_reason=False) == dest


def test_move_across_filesystems_goes_through_a_temp_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_rename(a: object, b: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    seen: list[list[str]] = []
    real_replace = os.replace

    def watch_replace(a: str | Path, b: str | Path) -> None:
        seen.append(sorted(p.name for p in (tmp_path / "out").iterdir()))
        real_replace(a, b)

    monkeypatch.setattr(disposal.os, "rename", no_rename)
    monkeypatch.setattr(fsutil.os, "replace", watch_replace)
    src, dest = tmp_path / "a.jpg", tmp_path / "out/2026-01-01/a.jpg"
    src.write_bytes(b"content")
    os.utime(src, (1_600_000_000, 1_600_000_000))
    assert move(src, dest, decided(src), set(), root=tmp_path / "out", with_reason=False) == dest
    assert dest.read_bytes() == b"content" and dest.stat().st_mtime == 1_600_000_000 and not src.exists()
    assert seen == [[f".~a.jpg.{os.getpid()}.tmp", "2026-01-01"]], "copied under a temp name first"
    link = tmp_path / "link.jpg"
    link.symlink_to("/etc/passwd")
    final = move(link, tmp_path / "out/link.jpg", decided(link), set(), root=tmp_path / "out", with_reason=True)
    assert final is not None and final.is_symlink() and os.readlink(final) == "/etc/passwd"
    assert not os.path.lexists(link)


def test_reason_and_stale_temps(tmp_path: Path) -> None:
    write_reason(tmp_path / "bad.jpg", "not an image", root=tmp_path)
    assert reason_path(tmp_path / "bad.jpg").read_text() == "not an image\n"
    (tmp_path / ".~engagement-report.123.tmp").write_bytes(b"half")
    (tmp_path / ".keep").write_bytes(b"not ours")
    assert remove_temps([tmp_path, tmp_path / "missing"]) == [tmp_path / ".~engagement-report.123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep", "bad.jpg.reason.txt"]


def test_a_file_replaced_under_its_name_is_not_moved_as_the_decided_one(tmp_path: Path) -> None:
    src, dest = tmp_path / "in/banner.jpg", tmp_path / "out/banner.jpg"
    src.parent.mkdir()
    src.write_bytes(b"old export")
    what = decided(src)
    src.write_bytes(b"new export")  # re-exported while the batch that read the old bytes ran
    assert move(src, dest, what, set(), root=tmp_path / "out", with_reason=False) is None
    assert src.read_bytes() == b"new export" and not dest.exists()
    # Same size and mtime as the decided file, different bytes: the hash tells them apart.
    src.write_bytes(b"old export")
    os.utime(src, ns=(what.candidate.mtime_ns or 0, what.candidate.mtime_ns or 0))
    twin = decided(src)
    src.write_bytes(b"odd export")
    os.utime(src, ns=(twin.candidate.mtime_ns or 0, twin.candidate.mtime_ns or 0))
    assert move(src, dest, twin, set(), root=tmp_path / "out", with_reason=False) is None


def test_a_file_swapped_between_the_check_and_the_rename_goes_back(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    src, dest = tmp_path / "in/banner.jpg", tmp_path / "out/banner.jpg"
    src.parent.mkdir()
    src.write_bytes(b"old export")
    what = decided(src)
    real_rename = os.rename

    def swap_then_rename(a: str | Path, b: str | Path) -> None:
        if Path(a) == src and not os.path.lexists(dest):
            os.unlink(src)
            src.write_bytes(b"new export")  # the sync client wins the race
        real_rename(a, b)

    monkeypatch.setattr(disposal.os, "rename", swap_then_rename)
    assert move(src, dest, what, set(), root=tmp_path / "out", with_reason=False) is None
    assert src.read_bytes() == b"new export" and not dest.exists()


def _cross_device_and_undeletable(monkeypatch: pytest.MonkeyPatch, src: Path) -> None:
    def no_rename(a: object, b: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    real_unlink = os.unlink

    def no_unlink(path: str | Path, *args: object, **kwargs: object) -> None:
        if Path(path) == src:
            raise PermissionError(errno.EACCES, "Permission denied")
        real_unlink(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(disposal.os, "rename", no_rename)
    monkeypatch.setattr(disposal.os, "unlink", no_unlink)


def test_an_unhashed_file_that_cannot_be_deleted_is_copied_once(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    src, dest = tmp_path / "in/big.mov", tmp_path / "out/big.mov"
    src.parent.mkdir()
    src.write_bytes(os.urandom(3 * 2**20 + 5))
    what = decided(src, hashed=False)  # too large to hash at intake
    _cross_device_and_undeletable(monkeypatch, src)
    blocks: list[int] = []
    for _ in range(3):
        with pytest.raises(PermissionError):
            move(src, dest, what, set(), root=tmp_path / "out", with_reason=False, progress=blocks.append)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["big.mov"], "one copy, however often it is retried"
    assert dest.read_bytes() == src.read_bytes()
    assert len(blocks) == 4 and sum(blocks) == src.stat().st_size, "each copied block feeds the watchdog"


def test_planted_links_in_the_outbox_are_never_followed(tmp_path: Path) -> None:
    out, secret = tmp_path / "out", tmp_path / "secret"
    out.mkdir()
    secret.mkdir()
    (secret / "passwd").write_text("root:x:0:0\n")
    # The temporary name a write will use, planted as a link to a file worth keeping.
    planted = fsutil.temp_path(out / "bad.jpg.reason.txt", out)
    planted.symlink_to(secret / "passwd")
    write_reason(out / "bad.jpg", "not an image", root=out)
    assert (secret / "passwd").read_text() == "root:x:0:0\n"
    assert reason_path(out / "bad.jpg").read_text() == "not an image\n" and not os.path.lexists(planted)
    # A day folder planted as a link to another folder: the move is refused, nothing lands there.
    (out / "2026-01-01").symlink_to(secret)
    src = tmp_path / "a.jpg"
    src.write_bytes(b"content")
    with pytest.raises(OSError, match="not followed"):
        move(src, out / "2026-01-01/a.jpg", decided(src), set(), root=out, with_reason=False)
    assert sorted(p.name for p in secret.iterdir()) == ["passwd"] and src.exists()


def test_names_near_the_limit_leave_room_for_temporaries(tmp_path: Path) -> None:
    name = "é" * 120 + ".jpg"  # 244 bytes: `.~<name>.<pid>.tmp` would pass 255
    fsutil.atomic_write(tmp_path / name, b"data")
    assert (tmp_path / name).read_bytes() == b"data"
    fitted = disposal.fitting(tmp_path / name)
    assert fitted.suffix == ".jpg" and len(os.fsencode(reason_path(fitted).name + "-99")) <= 255


def test_moves_and_scoring_feed_the_watchdog_through_one_progress() -> None:
    # Scoring tells of files done and a move of blocks copied, to the same heartbeat: one Progress, in results.py.
    package = Path(scorer.__file__).parent
    homes = sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py")
                   if re.search(r"^Progress\b.*=", p.read_text(encoding="utf-8"), re.M))
    assert homes == ["results.py"]
