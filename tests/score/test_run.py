"""`scorer score` end to end: a real exported learner, real files, the report that comes out."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from openpyxl import load_workbook

from scorer.cli import main
from scorer.results import engagement_score
from tests.support.helpers import RENAMED, Project
from tests.support.imagegen import CLASS_COLOURS, write_creative


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _rows(path: Path, sheet: str) -> list[dict[str, object]]:
    ws = load_workbook(path)[sheet]
    header = [c.value for c in ws[1]]
    return [dict(zip(header, row, strict=True)) for row in ws.iter_rows(min_row=2, values_only=True)]


# Each project as the tiny learner's first start left it: the runs use the defaults (Grad-CAM included), so
# they open the learner through fastai, and check its kept export against it instead of exporting again.
pytestmark = pytest.mark.usefixtures("watched")


@pytest.fixture
def campaign(project: Project) -> Path:
    """Four creatives of each class colour, one in a subfolder, plus a broken file."""
    folder = project.inbox
    for label, colour in CLASS_COLOURS.items():
        for n in range(4):
            sub = "stories/" if n == 0 else ""
            write_creative(folder / f"{sub}{label.lower()}-{n}.jpg", colour, (320, 400), seed=n)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return folder


@pytest.mark.slow
def test_score_ranks_good_images_and_rejects_the_broken_one(project: Project, campaign: Path) -> None:
    before = _snapshot(campaign)
    result = CliRunner().invoke(main, ["score", str(campaign), "--config", str(project.config)])
    assert result.exit_code == 0, result.output
    (report,) = project.reports()
    assert f"Report: {report}" in result.output.replace("\n", "")
    lines = result.output.splitlines()
    start = lines.index("12 scored, 1 rejected")
    assert lines[start:start + 3] == ["12 scored, 1 rejected", "Rejected:",
                                      "  broken.jpg: file is incomplete or corrupt"]
    assert _snapshot(campaign) == before, "scoring must never modify or move its inputs"

    ranking = _rows(report, "Ranking")
    assert sorted(r["File"] for r in ranking) == sorted(
        f"{'stories/' if n == 0 else ''}{label.lower()}-{n}.jpg" for label in CLASS_COLOURS for n in range(4))
    assert [r["Rank"] for r in ranking] == list(range(1, 13))
    scores = [r["Engagement score"] for r in ranking]
    assert scores == sorted(scores, reverse=True)
    for r in ranking:
        probs = [r["P(Low)"], r["P(Neutral)"], r["P(High)"]]
        assert sum(probs) == pytest.approx(1.0, abs=1e-6)
        assert r["Engagement score"] == pytest.approx(engagement_score(probs), abs=0.01)
        assert r["Confidence"] == pytest.approx(max(probs))
        assert r["Pixels"] == "320 × 400" and r["Format"] == "image"
    # The learner learned colour -> class, so red creatives must outrank blue ones.
    mean = {label: sum(r["Engagement score"] for r in ranking if r["File"].split("/")[-1].startswith(label.lower())) / 4
            for label in CLASS_COLOURS}
    assert mean["High"] > mean["Low"]

    assert _rows(report, "Rejected") == [
        {"File": "broken.jpg", "Reason": "file is incomplete or corrupt", "Location": str(campaign / "broken.jpg")}]
    model = dict(load_workbook(report)["Model"].iter_rows(min_row=2, values_only=True))
    assert model["Classes (low → high)"] == "Low < Neutral < High"
    assert model["SHA-256"] == hashlib.sha256((project.models / "tiny.pkl").read_bytes()).hexdigest()


@pytest.mark.slow
def test_score_with_model_and_out_options_and_custom_classes(project: Project, renamed_learner: Path,
                                                              tmp_path: Path) -> None:
    for label, colour in CLASS_COLOURS.items():
        write_creative(project.inbox / f"{RENAMED[label]}.png", colour, (64, 64))
    elsewhere = tmp_path / "reports"
    elsewhere.mkdir()
    args = ["score", str(project.inbox), "--config", str(project.config), "--model", str(renamed_learner),
            "--out", str(elsewhere)]

    unordered = CliRunner().invoke(main, args)
    assert unordered.exit_code == 2
    assert "cannot tell the low-to-high order of the learner's classes ['bronze', 'gold', 'silver']" in unordered.output

    project.write_config("model: models/tiny.pkl\nclasses: [bronze, silver, gold]\n")
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert project.reports() == []
    (report,) = elsewhere.glob("engagement-report-*.xlsx")
    ranking = _rows(report, "Ranking")
    assert list(ranking[0])[:8] == ["Rank", "File", "Predicted class", "Confidence", "Engagement score",
                                    "P(bronze)", "P(silver)", "P(gold)"]
    for r in ranking:
        probs = [r["P(bronze)"], r["P(silver)"], r["P(gold)"]]
        assert r["Engagement score"] == pytest.approx(engagement_score(probs), abs=0.01)
        assert r["Predicted class"] == ["bronze", "silver", "gold"][probs.index(max(probs))]


@pytest.mark.slow
def test_formula_names_are_text_and_files_are_never_overwritten(project: Project) -> None:
    write_creative(project.inbox / "=1+1.jpg", CLASS_COLOURS["High"], (64, 64))
    args = ["score", str(project.inbox / "=1+1.jpg"), "--config", str(project.config)]
    first = CliRunner().invoke(main, args)
    second = CliRunner().invoke(main, args)
    assert first.exit_code == second.exit_code == 0
    reports = project.reports()
    assert len(reports) == 2, "a second report in the same second must get a new name"
    cell = load_workbook(reports[0])["Ranking"]["B2"]
    assert cell.value == "=1+1.jpg" and cell.data_type == "s"
    assert not [p for p in os.listdir(project.outbox) if p.startswith(".")], "temporary files left behind"


@pytest.mark.slow
def test_model_and_out_named_on_the_command_line(project: Project, renamed_learner: Path, tmp_path: Path) -> None:
    write_creative(project.inbox / "a.png", CLASS_COLOURS["High"], (64, 64))
    pinned = hashlib.sha256((project.models / "tiny.pkl").read_bytes()).hexdigest()
    project.write_config(f"model: models/tiny.pkl\nmodel_sha256: {pinned}\nclasses: [bronze, silver, gold]\n")
    project.outbox.rmdir()
    base = ["score", str(project.inbox), "--config", str(project.config)]
    missing = CliRunner().invoke(main, base + ["--model", str(renamed_learner)])
    assert missing.exit_code == 2 and "does not exist: create it or change 'outbox'" in missing.output
    assert not project.outbox.exists(), "the configured outbox (maybe a share) is never created"
    new = tmp_path / "new" / "reports"
    result = CliRunner().invoke(main, base + ["--model", str(renamed_learner), "--out", str(new)])
    assert result.exit_code == 0, result.output  # config's pin is for config's model, not this one
    assert len(list(new.glob("engagement-report-*.xlsx"))) == 1
    assert "tiny.pkl" in (project.config.read_text()), "config.yaml is left alone"


@pytest.mark.slow
def test_score_lists_the_sidecars_it_read_and_those_it_could_not_use(project: Project) -> None:
    folder = project.inbox
    for name in ("a", "b", "c"):
        write_creative(folder / f"{name}.jpg", CLASS_COLOURS["High"], (64, 64), seed=ord(name))
    (folder / "a.txt").write_text("posted_at: 2026-12-03 18:00\nSpring\n", encoding="utf-8")
    (folder / "b.json").write_text("{not json", encoding="utf-8")
    (folder / "c.json").write_text('{"caption": "read"}', encoding="utf-8")
    (folder / "c.txt").write_text("shadowed by c.json\n", encoding="utf-8")
    (folder / "README.txt").write_text("Drop creatives here\n", encoding="utf-8")
    (folder / "drafts").mkdir()
    (folder / "drafts" / "notes.json").write_text("{}", encoding="utf-8")
    before = _snapshot(folder)

    result = CliRunner().invoke(main, ["score", str(folder), "--config", str(project.config)])

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    (read,) = [line for line in lines if line.startswith("Posting time and caption read")]
    assert read.endswith(("a.txt, c.json", "c.json, a.txt")), result.output
    assert read.startswith("Posting time and caption read from 2 .txt/.json files beside their creatives: ")
    start = lines.index("4 .txt/.json files not used (not images, and not read as a creative's posting time and "
                        "caption):")
    assert sorted(lines[start + 1:start + 5]) == [
        "  README.txt: no creative named README.* beside it",
        "  b.json: rejected, its reason listed with the rejected files: its creative is scored on its image alone",
        "  c.txt: c.json beside c.jpg is read instead",
        "  drafts/notes.json: no creative named notes.* beside it",
    ], result.output
    assert "  b.json: b.json is not valid JSON (Expecting property name enclosed in double quotes, line 1): write " \
           '{"posted_at": "2026-12-03 18:00", "caption": "..."}' in lines[lines.index("Rejected:"):start]
    assert _snapshot(folder) == before, "scoring leaves every input, sidecars included, where it was"

    one = CliRunner().invoke(main, ["score", str(folder / "c.jpg"), "--config", str(project.config)])
    assert one.exit_code == 0, one.output
    assert "Posting time and caption read from 1 .txt/.json file beside their creatives: c.json" in one.output
    assert "  c.txt: c.json beside c.jpg is read instead" in one.output
    assert "README.txt" not in one.output, "only sidecars beside the files given, or under the folders given"


def test_a_folder_where_nothing_can_be_scored_lists_what_was_rejected_and_why(project: Project) -> None:
    project.write_config("model: models/tiny.pkl\nreport:\n  explain: never\n")
    folder = project.inbox
    for n in range(6):
        (folder / f"notes-{n}.jpg").write_text("Campaign notes: launch on Monday\n", encoding="utf-8")
    (folder / "banner.gif").write_bytes(b"GIF89a" + b"\0" * 32)
    for n, path in enumerate([folder / "banner.gif", *(folder / f"notes-{n}.jpg" for n in range(6))]):
        os.utime(path, (1_700_000_000 + n, 1_700_000_000 + n))  # the order inputs are taken in: mtime, then name
    (folder / "plan.txt").write_text("posted_at: 2026-12-03 18:00\n", encoding="utf-8")

    result = CliRunner().invoke(main, ["score", str(folder), "--config", str(project.config)])

    assert result.exit_code == 0, result.output
    (report,) = project.reports()
    not_an_image = "not an image (accepted: JPEG, PNG, WEBP): save it in one of these formats"
    assert result.stdout.splitlines() == [
        "0 scored, 7 rejected: nothing could be scored",
        "Rejected:",
        "  banner.gif: GIF files are not accepted (accepted: JPEG, PNG, WEBP): convert it, or add GIF to "
        "images.formats",
        *[f"  notes-{n}.jpg: {not_an_image}" for n in range(4)],
        "  and 2 more: see the report's Rejected sheet",
        f"Report: {report}",
        "1 .txt/.json file not used (not images, and not read as a creative's posting time and caption):",
        "  plan.txt: no creative named plan.* beside it",
    ]
    assert len(_rows(report, "Rejected")) == 7
