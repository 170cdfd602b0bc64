"""What every sheet is made of and how it prints: cells, the header row, A4 pages, rows tall enough for their text.

The Ranking sheet is many columns wide, so it prints over a few landscape pages, the key columns
first (pages go down the creatives before across the columns), each page repeating the header row
and the file's name; every other sheet is one page wide. LibreOffice grows no row for wrapped
text that a program wrote, so a wrapped row is given a height from its text (a row with pictures,
at least theirs).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from openpyxl.cell import Cell, WriteOnlyCell
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet
from openpyxl.worksheet.page import PageMargins
from openpyxl.worksheet.worksheet import Worksheet

from scorer.textsafe import looks_like_formula, xml_text

LINE_PT = 15.0  # one line of 11-point Calibri, Excel's default row
WRAP = Alignment(vertical="top", wrap_text=True)
WRAP_MIDDLE = Alignment(vertical="center", wrap_text=True)
# A font given without its name is drawn in a serif face by LibreOffice: name the workbook's own.
BOLD = Font(name="Calibri", bold=True)
WARNING_FONT = Font(name="Calibri", bold=True, color="C00000")
_HEADER_FONT = Font(name="Calibri", bold=True, color="FFFFFF")
_HEADER_FILL = PatternFill("solid", start_color="1F4E78")


def cell(ws: WriteOnlyWorksheet, value: object, number_format: str | None = None) -> Cell:
    """A cell for `ws.append`; text is external, so it stays text and loses what XML cannot hold."""
    c = WriteOnlyCell(ws)
    if isinstance(value, str):
        c.value = xml_text(value)
        # openpyxl turns any string starting with '=' into a formula; external text never is one.
        c.data_type = "s"
        if looks_like_formula(c.value):
            c.quotePrefix = True  # and Excel must not re-read it as one when the cell is edited
    else:
        c.value = value
    if number_format:
        c.number_format = number_format
    return c


def header_row(ws: WriteOnlyWorksheet, names: Sequence[str]) -> list[Cell]:
    """Header cells, white on blue, for `ws.append`."""
    cells = []
    for name in names:
        c = cell(ws, name)
        c.font, c.fill = _HEADER_FONT, _HEADER_FILL
        c.alignment = Alignment(vertical="center", wrap_text=True)
        cells.append(c)
    return cells


def header(ws: WriteOnlyWorksheet, names: Sequence[str], widths: Sequence[float], note: str = "",
           pages_wide: int = 1) -> int:
    """Append a sheet's styled header row, under a warning `note` if any; set its column widths, frozen panes
    and page setup. Return the header's row: what is above it and the header repeat on every printed page.

    A sheet more than a page wide also keeps its first two columns (which name each row) on every page."""
    for col, width in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(col)].width = width
    top = 2 if note else 1
    wide = pages_wide > 1
    # the sheet's view and columns go out with its first row: set before anything is appended
    ws.freeze_panes = f"{'C' if wide else 'A'}{top + 1}"
    printed(ws, pages_wide=pages_wide, title_rows=f"1:{top}", title_cols="A:B" if wide else "")
    ws.row_dimensions[top].height = 30
    if note:  # in the two columns that every page repeats
        ws.merged_cells.add("A1:B1")
        ws.row_dimensions[1].height = wrapped_height([(note, widths[0] + widths[1])])
        ws.append([warning_cell(ws, note)])
    ws.append(header_row(ws, names))
    return top


def warning_cell(ws: WriteOnlyWorksheet, text: str) -> Cell:
    """A warning in bold red, wrapped."""
    c = cell(ws, text)
    c.font, c.alignment = WARNING_FONT, WRAP
    return c


def printed(ws: WriteOnlyWorksheet, *, pages_wide: int = 1, title_rows: str = "", title_cols: str = "",
            portrait: bool = False) -> None:
    """Print the sheet on A4, `pages_wide` pages across and as many down as it takes, with page numbers."""
    setup = ws.page_setup
    setup.paperSize = Worksheet.PAPERSIZE_A4
    setup.orientation = "portrait" if portrait else "landscape"
    setup.pageOrder = "downThenOver"
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    setup.fitToWidth, setup.fitToHeight = pages_wide, 0
    ws.page_margins = PageMargins(left=0.4, right=0.4, top=0.7, bottom=0.7, header=0.3, footer=0.3)
    ws.print_options.gridLines = True  # a row of pictures and figures is easier to follow across a page
    ws.oddHeader.left.text, ws.oddHeader.right.text = "&F", "&A"  # the file and the sheet
    ws.oddFooter.center.text = "Page &P of &N"
    if title_rows:
        ws.print_title_rows = title_rows
    if title_cols:
        ws.print_title_cols = title_cols


def append_fitted(ws: WriteOnlyWorksheet, row: int, cells: Sequence[Cell], widths: Sequence[float],
                  at_least: float = 0.0) -> None:
    """Append `cells` as row `row`, as tall as its wrapped cells' text needs in columns of `widths`, or `at_least`."""
    texts = [(str(c.value), width) for c, width in zip(cells, widths, strict=False)
             if c.value is not None and c.alignment.wrap_text]
    height = max(wrapped_height(texts) if texts else 0.0, at_least)
    if height:
        ws.row_dimensions[row].height = height
    ws.append(list(cells))


def wrapped_height(cells: Iterable[tuple[str, float]]) -> float:
    """The height in points of a row whose cells wrap these texts in columns of these widths."""
    return max(_lines(text, width) for text, width in cells) * LINE_PT + 3


def _lines(text: str, width: float) -> int:
    # A column `width` wide holds about 1.2 characters a unit of 11-point text in a wide face (DejaVu Sans, where
    # LibreOffice has no Calibri), more in Calibri: 1.15 leaves room for the words that wrapping moves down.
    per_line = max(int(width * 1.15), 1)
    return sum(max(math.ceil(len(part) / per_line), 1) for part in text.split("\n"))
