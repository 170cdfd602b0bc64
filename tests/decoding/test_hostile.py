"""Hostile inputs through `scorer score`: every file is ranked or rejected with the right reason."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from openpyxl import load_workbook

from scorer.config import load_settings
from scorer.scoring.assembly import open_engine
from scorer.scoring.engine import Item
from tests.support.helpers import Project
from tests.support.hostile import Expect, make_corpus, png_bomb, shown
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.poison import poison_decode
from tests.support.workbooks import as_libreoffice_reads


def _sheet(path: Path, name: str) -> list[dict[str, object]]:
    ws = load_workbook(path)[name]
    header = [c.value for c in ws[1]]
    return [dict(zip(header, row, strict=True)) for row in ws.iter_rows(min_row=2, values_only=True)]


def check_report_accounts_for_corpus(report: Path, expect: dict[str, Expect], name_of: callable = shown) -> None:
    """Every corpus entry is on exactly one sheet, with the expected note, reason or original."""
    ranking = {r["File"]: r for r in _sheet(report, "Ranking")}
    rejected = {r["File"]: r for r in _sheet(report, "Rejected")}
    duplicates = {r["File"]: r for r in _sheet(report, "Duplicates")}
    for name, want in expect.items():
        key = name_of(name)
        where = [sheet for sheet, rows in (("scored", ranking), ("rejected", rejected), ("duplicate", duplicates))
                 if key in rows]
        assert where == [want.outcome], f"{name!r} is on {where}, expected {want.outcome}"
        row = {"scored": ranking, "rejected": rejected, "duplicate": duplicates}[want.outcome][key]
        field = {"scored": "Notes", "rejected": "Reason", "duplicate": "Same content as"}[want.outcome]
        assert want.text in (row[field] or ""), f"{name!r}: {row[field]!r} lacks {want.text!r}"
    assert len(ranking) + len(rejected) + len(duplicates) == len(expect)


@pytest.fixture
def corpus(project: Project, tmp_path: Path) -> dict[str, Expect]:
    return make_corpus(project.inbox, tmp_path / "outside")


@pytest.mark.slow
def test_corpus_through_score(project: Project, corpus: dict[str, Expect], tmp_path: Path) -> None:
    before = {p: p.lstat().st_mtime_ns for p in project.inbox.rglob("*")}
    proc = subprocess.run([sys.executable, "-m", "scorer", "score", str(project.inbox), "--config",
                           str(project.config)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (report,) = project.reports()
    check_report_accounts_for_corpus(report, corpus)
    assert {p: p.lstat().st_mtime_ns for p in project.inbox.rglob("*")} == before
    ranking = {r["File"]: r for r in _sheet(report, "Ranking")}
    assert ranking["rotated.jpg"]["Pixels"] == "200 × 300"  # upright dimensions
    assert ranking["huge-9000x9000.jpg"]["Pixels"] == "9000 × 9000"
    check_libreoffice_shows_text_as_typed(report, corpus, tmp_path / "csv")


def check_libreoffice_shows_text_as_typed(report: Path, expect: dict[str, Expect], out: Path) -> None:
    """LibreOffice opens the report headlessly and every external string comes back exactly as typed."""
    read = as_libreoffice_reads(report, out)
    if read is None:
        return
    sheets = {name: [dict(zip(rows[0], row, strict=False)) for row in rows[1:]] for name, rows in read.items()
              if name in ("Ranking", "Rejected", "Duplicates")}
    shown_names = {row["File"] for rows in sheets.values() for row in rows}
    assert shown_names == {shown(n) for n in expect}
    reasons = {row["File"]: row["Reason"] for row in sheets["Rejected"]}
    for name, want in expect.items():
        if want.outcome == "rejected":
            assert want.text in reasons[shown(name)]


def _peak_rss_kb(args: list[str]) -> int:
    """Peak RSS of a scorer run and everything it started, measured from a fresh process."""
    script = textwrap.dedent(f"""
        import resource, subprocess, sys
        proc = subprocess.run({args!r}, capture_output=True, text=True)
        print(proc.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
        sys.stderr.write(proc.stderr)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    code, peak = done.stdout.split()
    assert code == "0", done.stderr
    return int(peak)


@pytest.mark.slow
def test_bomb_is_rejected_without_memory_growth(watched: Project) -> None:
    project = watched
    project.write_config("model: models/tiny.pkl\nreport:\n  explain: never\n")  # opened from its fast start
    small, bomb = project.root / "small", project.root / "bomb"
    small.mkdir()
    bomb.mkdir()
    write_creative(small / "a.png", CLASS_COLOURS["Low"], (64, 64))
    (bomb / "bomb.png").write_bytes(png_bomb(30000, 30000))  # 900 MB of pixels in under 1 MB
    base = [sys.executable, "-m", "scorer", "score", "--config", str(project.config)]
    baseline = _peak_rss_kb(base + [str(small)])
    peak = _peak_rss_kb(base + [str(bomb)])
    assert peak < baseline + 50 * 1024, f"peak RSS {peak} kB vs {baseline} kB for a small image"
    rejected = _sheet(project.reports()[-1], "Rejected")
    assert rejected[0]["Reason"] == "image too large: 30000×30000 pixels, limit 100 MP"


@pytest.mark.slow
def test_decode_memory_bound_and_accepted_formats_are_configurable(project: Project) -> None:
    from PIL import Image

    Image.linear_gradient("L").resize((6000, 6000)).convert("RGB").save(project.inbox / "wide.png")
    (project.root / "corpus").mkdir()
    expect = make_corpus(project.root / "corpus" / "in", project.root / "corpus" / "out")
    shutil.copy(project.root / "corpus" / "in" / "animated.gif", project.inbox / "animated.gif")
    assert expect["animated.gif"].outcome == "rejected"
    project.write_config("model: models/tiny.pkl\nimages:\n  formats: [JPEG, PNG, GIF]\n  decode_memory_mb: 64\n")
    settings = load_settings(project.config)
    engine = open_engine(settings)
    try:
        result = engine.score([Item(p, p.name) for p in sorted(project.inbox.iterdir())])
    finally:
        engine.close()
    assert [s.name for s in result.scored] == ["animated.gif"]
    assert result.scored[0].notes == "animated: first of 3 frames scored"
    assert [(r.name, r.reason) for r in result.rejected] == [
        ("wide.png", "image too large to decode: 6000×6000 pixels needs 103 MB, limit 64 MB (images.decode_memory_mb)")]


@pytest.mark.slow
def test_a_file_that_hangs_or_crashes_the_decoder_is_rejected_and_the_rest_scored(project: Project) -> None:
    names = ["a.jpg", "hang.jpg", "b.jpg", "crash.jpg", "c.jpg", "d.jpg"]
    for i, name in enumerate(names):
        write_creative(project.inbox / name, list(CLASS_COLOURS.values())[i % 3], (80, 60), seed=i)
    settings = load_settings(project.config)
    settings = dataclasses.replace(settings, images=dataclasses.replace(settings.images, decode_timeout=2.0))
    engine = open_engine(settings, decode=poison_decode)
    try:
        result = engine.score([Item(project.inbox / n, n) for n in names])
        again = engine.score([Item(project.inbox / "a.jpg", "a.jpg")])  # fresh workers took over
    finally:
        engine.close()
    assert sorted(s.name for s in result.scored) == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert {r.name: r.reason for r in result.rejected} == {
        "hang.jpg": "the file hangs the image decoder (no result in 2 s)",
        "crash.jpg": "the file crashes the image decoder",
    }
    assert [s.name for s in again.scored] == ["a.jpg"]
    hashes = {s.sha256 for s in result.scored}
    assert hashlib.sha256((project.inbox / "a.jpg").read_bytes()).hexdigest() in hashes
    assert os.listdir(project.inbox)  # nothing moved: `score` never touches inputs


@pytest.mark.slow
def test_corpus_through_watch_once(watched: Project, corpus: dict[str, Expect], tmp_path: Path) -> None:
    project = watched  # Grad-CAM on the corpus is test_corpus_through_score's; here the service opens the export alone
    project.write_config("model: models/tiny.pkl\nreport:\n  explain: never\nwatch:\n  settle_seconds: 0.3\n")
    proc = subprocess.run([sys.executable, "-m", "scorer", "watch", "--once", "--config", str(project.config)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    (report,) = project.outbox.glob("engagement-report-*-batch*.xlsx")
    check_report_accounts_for_corpus(report, corpus)
    check_report_accounts_for_corpus(project.outbox / "latest.xlsx", corpus)
    left = [p for p in project.inbox.rglob("*") if not p.is_dir() or p.is_symlink()]
    assert left == [], f"left in the inbox: {left}"
    rejected_dir = project.outbox / "rejected"
    for name, want in corpus.items():
        if want.outcome == "rejected":
            assert os.path.lexists(rejected_dir / name), f"{name!r} was not set aside"
            reason = (rejected_dir / f"{name}.reason.txt").read_text(encoding="utf-8")
            assert want.text in reason
    assert (rejected_dir / "link.jpg").is_symlink(), "the link itself is set aside, never followed"
    assert (tmp_path / "outside" / "secret.jpg").exists()
    (day,) = (project.outbox / "scored").iterdir()
    archived = {p.relative_to(day).as_posix() for p in day.rglob("*") if p.is_file()}
    assert archived == {n for n, w in corpus.items() if w.outcome == "scored"}
    check_libreoffice_shows_text_as_typed(report, corpus, tmp_path / "csv")
