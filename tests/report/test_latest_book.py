"""latest.xlsx on paper: the Summary's sentences wrap within one A4 page, its table's header repeats."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

from openpyxl import load_workbook
from openpyxl.utils import get_column_letter

from scorer.report.latest_book import LAUNCH_HEADERS, NO_RECORD, DayCount, Window, save_latest
from scorer.report.workbook import ReportContent
from scorer.results import BatchResult
from tests.support.history import INFO
from tests.support.workbooks import evidenced, lines_needed, printed_scale

CLASSES = ("Low", "Neutral", "High")


def _latest(tmp_path: Path, days: int = 40) -> Path:
    today = date(2026, 3, 1)
    per_day = tuple(DayCount(today - timedelta(days=n), {"Low": n % 3, "Neutral": 4, "High": 1}, n % 2, 0)
                    for n in range(days))
    window = Window(datetime(2026, 1, 20, 9, 30), days, 200, CLASSES, per_day, 57)
    scored = [evidenced(f"creative-{n}.jpg", (0.2, 0.3, 0.5)) for n in range(3)]
    return save_latest(tmp_path / "latest.xlsx", ReportContent(BatchResult(scored), INFO), window)


def test_summary_sentences_wrap_on_one_a4_page_and_the_table_header_repeats(tmp_path: Path) -> None:
    ws = load_workbook(_latest(tmp_path))["Summary"]
    setup = ws.page_setup
    assert int(setup.paperSize) == int(ws.PAPERSIZE_A4) and ws.sheet_properties.pageSetUpPr.fitToPage
    assert setup.fitToWidth == 1 and setup.fitToHeight == 0 and printed_scale(ws) >= 0.95
    assert "&P" in ws.oddFooter.center.text, "page numbers"
    last = get_column_letter(ws.max_column)
    table = next(row[0].row for row in ws.iter_rows() if row[0].value == "Day")
    assert ws.print_title_rows == f"${table}:${table}", "a window of many days repeats the table's header"
    width = sum(ws.column_dimensions[get_column_letter(n)].width for n in range(1, ws.max_column + 1))
    sentences = [row[0] for row in ws.iter_rows(min_row=2, max_row=table - 1) if row[0].value]  # under the title
    assert len(sentences) == 4 and str(sentences[0].value).startswith("Ranking lists the best 3")
    for c in sentences:
        assert f"A{c.row}:{last}{c.row}" in ws.merged_cells, "a sentence has the table's width, not one column's"
        assert c.alignment.wrap_text
        lines = lines_needed(str(c.value), width)
        assert (ws.row_dimensions[c.row].height or 15) >= 14 * lines, c.value


def test_track_record_sentences_wrap_on_its_page(tmp_path: Path) -> None:
    ws = load_workbook(_latest(tmp_path))["Track record"]
    assert ws.page_setup.fitToWidth == 1 and printed_scale(ws) >= 0.75
    note = ws["A2"]
    assert note.value == NO_RECORD and note.alignment.wrap_text
    assert f"A2:{get_column_letter(len(LAUNCH_HEADERS))}2" in ws.merged_cells, "as wide as the table of launches"
