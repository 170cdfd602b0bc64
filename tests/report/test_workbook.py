"""The Excel report: sheets, headers, order, formulas kept as text, atomic and never overwritten."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest
from openpyxl import load_workbook

from scorer.ledger.store import Ledger
from scorer.report.workbook import ReportContent, headers, report_name, save_report
from scorer.results import BatchResult, Duplicate, ModelInfo, Rejected, Scored, engagement_score
from tests.support.history import INFO, fill_history, record_launches, unrelated_to
from tests.support.imagegen import creative

CLASSES = ("Low", "Neutral", "High")


def _info(card: dict[str, str] | None = None) -> ModelInfo:
    return ModelInfo(Path("/models/m.pkl"), "ab" * 32, CLASSES, "cpu", "onnxruntime-1.0", "crop to 224×224",
                     {"fastai": "2.8.12", "torch": "2.14.1"}, card or {})


def _thumb() -> bytes:
    import io

    out = io.BytesIO()
    creative((9, 9, 9), (40, 30)).save(out, "JPEG")
    return out.getvalue()


def _scored(name: str, probs: tuple[float, ...], thumb: bool = False) -> Scored:
    sha = name.encode("utf-8", "surrogateescape").hex().ljust(64, "0")[:64]
    return Scored(name, f"/in/{name}", sha, CLASSES, probs, 1080, 1350, "JPEG",
                  2048, 1_700_000_000.0, 1_700_000_100.0, _thumb() if thumb else None, "")


@pytest.mark.parametrize(
    ("probs", "expected"),
    [((1.0, 0.0, 0.0), 0.0), ((0.0, 0.0, 1.0), 100.0), ((0.0, 1.0, 0.0), 50.0), ((0.2, 0.3, 0.5), 65.0),
     ((0.25, 0.75), 75.0), ((0.1, 0.2, 0.3, 0.4), 100 * (0.2 / 3 + 0.6 / 3 + 1.2 / 3))],
)
def test_engagement_score_formula(probs: tuple[float, ...], expected: float) -> None:
    assert engagement_score(probs) == pytest.approx(expected)


def test_ranking_sheet_headers_order_and_values(tmp_path: Path) -> None:
    scored = [_scored("mid.jpg", (0.2, 0.5, 0.3)), _scored("top.jpg", (0.1, 0.1, 0.8), thumb=True),
              _scored("low.jpg", (0.7, 0.2, 0.1)), _scored("tie-b.jpg", (0.2, 0.5, 0.3))]
    content = ReportContent(BatchResult(scored), _info())
    path = save_report(tmp_path / report_name(datetime(2026, 1, 2, 3, 4, 5)), content)
    assert path.name == "engagement-report-20260102-030405.xlsx"
    wb = load_workbook(path)
    assert wb.sheetnames == ["Ranking", "Rejected", "Duplicates", "Model"]
    ws = wb["Ranking"]
    header = [c.value for c in ws[1]]
    assert header[:8] == ["Rank", "File", "Predicted class", "Confidence", "Engagement score",
                          "P(Low)", "P(Neutral)", "P(High)"]
    assert header == headers(CLASSES)
    rows = [[c.value for c in row] for row in ws.iter_rows(min_row=2)]
    assert [r[1] for r in rows] == ["top.jpg", "mid.jpg", "tie-b.jpg", "low.jpg"]
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    for r in rows:
        assert sum(r[5:8]) == pytest.approx(1.0)
        assert r[4] == pytest.approx(engagement_score(r[5:8]), abs=0.01)
        assert r[3] == max(r[5:8])
        assert r[2] == CLASSES[r[5:8].index(max(r[5:8]))]
    assert [r[4] for r in rows] == sorted((r[4] for r in rows), reverse=True)
    assert ws.freeze_panes == "C2", "the header row and each creative's rank and name stay in view"
    assert ws.auto_filter.ref == f"A1:{ws.cell(1, len(header)).column_letter}5"
    assert ws["D2"].number_format == "0.0%" and ws["F2"].number_format == "0.0%"
    assert len(ws.conditional_formatting) == 1
    assert len(ws._images) == 1  # the one creative that had a thumbnail
    assert wb["Rejected"].max_row == 1 and [c.value for c in wb["Rejected"][1]] == ["File", "Reason", "Location"]


def test_formula_like_and_control_character_names_stay_text(tmp_path: Path) -> None:
    names = ["=1+1.jpg", "+SUM(A1).jpg", "-2.jpg", "@x.jpg", "#N/A", "bell\x07tab\x0bname.jpg",
             "bad-\udcff-bytes.jpg", "L" * 250 + ".jpg"]
    scored = [_scored(n, (0.3, 0.3, 0.4)) for n in names]
    rejected = [Rejected("=HYPERLINK(\"http://x\")", "/in/x", "=cmd|' /C calc'!A0")]
    path = save_report(tmp_path / "r.xlsx", ReportContent(BatchResult(scored, rejected), _info()))
    wb = load_workbook(path)
    ws = wb["Ranking"]
    cells = {ws.cell(r, 2).value: ws.cell(r, 2) for r in range(2, ws.max_row + 1)}
    for name in ["=1+1.jpg", "+SUM(A1).jpg", "-2.jpg", "@x.jpg", "#N/A", "L" * 250 + ".jpg"]:
        assert cells[name].data_type == "s", name
    assert "belltabname.jpg" in cells, "control characters are dropped from names people read"
    assert "bad-\ufffd-bytes.jpg" in cells
    assert cells["=1+1.jpg"].quotePrefix
    rej = wb["Rejected"]
    assert rej["A2"].value == '=HYPERLINK("http://x")' and rej["A2"].data_type == "s"
    assert rej["B2"].value == "=cmd|' /C calc'!A0" and rej["B2"].data_type == "s"


def test_duplicates_and_model_sheets(tmp_path: Path) -> None:
    original = _scored("first.jpg", (0.1, 0.2, 0.7))
    content = ReportContent(BatchResult([original], [], [Duplicate("again.jpg", "/in/again.jpg", original)]),
                            _info({"verdict": "not better than baseline", "accuracy": "0.41 (0.35–0.47)"}))
    wb = load_workbook(save_report(tmp_path / "r.xlsx", content))
    dup = [[c.value for c in row] for row in wb["Duplicates"].iter_rows()]
    assert dup[0] == ["File", "Same content as", "Predicted class", "Engagement score", "First scored", "Location"]
    assert dup[1][:4] == ["again.jpg", "first.jpg", "High", pytest.approx(original.score, abs=0.01)]
    model = dict(row for row in wb["Model"].iter_rows(min_row=2, values_only=True))
    assert model["SHA-256"] == "ab" * 32
    assert model["Classes (low → high)"] == "Low < Neutral < High"
    assert model["Device"] == "cpu" and model["fastai version"] == "2.8.12" and model["torch version"] == "2.14.1"
    assert model["Model card: verdict"] == "not better than baseline"
    assert "Report written" in model


@pytest.mark.parametrize("likes", ["following", "unrelated"])
def test_model_sheet_carries_the_track_record_and_opens_with_a_guess(tmp_path: Path, likes: str) -> None:
    made = fill_history(tmp_path, 30, per_batch=30, days=2)[:24]
    totals = [int(4000 + 100 * s.score) for s in made]
    if likes == "unrelated":
        totals = unrelated_to([s.score for s in made], totals)
    record = record_launches(tmp_path, made, totals)
    assert record.no_better_than_guess == (likes == "unrelated"), f"precondition not reached: {record.verdict}"
    ledger = Ledger(tmp_path)
    try:
        track = ledger.launches.track_record(INFO.sha256)
    finally:
        ledger.close()
    content = ReportContent(BatchResult(made[:3]), INFO, track=track)
    rows = list(load_workbook(save_report(tmp_path / "r.xlsx", content))["Model"].iter_rows(values_only=True))
    warning = [("Warning", f"Track record: {record.verdict}")] if likes == "unrelated" else []
    assert rows[1:1 + len(warning)] == warning, "a guess is said first"
    assert rows[1 + len(warning)][0] == "Model file"
    lines = record.headline
    assert rows[-len(lines):] == [(f"Track record: {key}", value) for key, value in lines.items()]


def test_reports_are_never_overwritten_and_leave_no_temp_files(tmp_path: Path) -> None:
    content = ReportContent(BatchResult([_scored("a.jpg", (0.2, 0.3, 0.5))]), _info())
    target = tmp_path / "engagement-report-20260101-000000.xlsx"
    target.write_bytes(b"someone else's report")
    first = save_report(target, content)
    second = save_report(target, content)
    assert target.read_bytes() == b"someone else's report"
    assert [first.name, second.name] == ["engagement-report-20260101-000000-2.xlsx",
                                         "engagement-report-20260101-000000-3.xlsx"]
    assert sorted(os.listdir(tmp_path)) == sorted([target.name, first.name, second.name])
    replaced = save_report(target, content, replace=True)
    assert replaced == target and load_workbook(target).sheetnames[0] == "Ranking"
