"""Moving decided files: never overwrite, survive a repeat after a crash, cross filesystems via a temp name."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from scorer import fsutil
from scorer.fsutil import free_name, remove_temps
from scorer.watch import disposal
from scorer.watch.disposal import move, reason_path, write_reason


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
    final = move(src, dest, sha(b"new"), set(), root=tmp_path / "out", with_reason=False)
    assert final == tmp_path / "out/a-2.jpg" and final.read_bytes() == b"new"
    assert dest.read_bytes() == b"old" and not src.exists()


def test_move_repeated_after_a_crash_finishes_instead_of_copying_twice(tmp_path: Path) -> None:
    src, dest = tmp_path / "a.jpg", tmp_path / "out/sub/a.jpg"
    src.write_bytes(b"content")
    dest.parent.mkdir(parents=True)
    dest.write_bytes(b"content")  # an earlier try copied it and died before removing the original
    assert move(src, dest, sha(b"content"), set(), root=tmp_path / "out", with_reason=False) == dest
    assert not src.exists() and sorted(p.name for p in dest.parent.iterdir()) == ["a.jpg"]
    assert move(src, dest, sha(b"content"), set(), root=tmp_path / "out", with_reason=False) == dest


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
    assert move(src, dest, sha(b"content"), set(), root=tmp_path / "out", with_reason=False) == dest
    assert dest.read_bytes() == b"content" and dest.stat().st_mtime == 1_600_000_000 and not src.exists()
    assert seen == [[f".~a.jpg.{os.getpid()}.tmp", "2026-01-01"]], "copied under a temp name first"
    link = tmp_path / "link.jpg"
    link.symlink_to("/etc/passwd")
    final = move(link, tmp_path / "out/link.jpg", None, set(), root=tmp_path / "out", with_reason=True)
    assert final.is_symlink() and os.readlink(final) == "/etc/passwd" and not os.path.lexists(link)


def test_reason_and_stale_temps(tmp_path: Path) -> None:
    write_reason(tmp_path / "bad.jpg", "not an image", root=tmp_path)
    assert reason_path(tmp_path / "bad.jpg").read_text() == "not an image\n"
    (tmp_path / ".~engagement-report.123.tmp").write_bytes(b"half")
    (tmp_path / ".keep").write_bytes(b"not ours")
    assert remove_temps([tmp_path, tmp_path / "missing"]) == [tmp_path / ".~engagement-report.123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".keep", "bad.jpg.reason.txt"]
