"""Reading the reports back in tests, and creatives with every evidence column to fill them with."""

from __future__ import annotations

import csv
import io
import math
import subprocess
from pathlib import Path

from openpyxl import load_workbook
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from scorer.results import Lookalikes, Neighbour, Scored
from tests.support.helpers import tool_or_warn
from tests.support.imagegen import creative

# Filter options: comma, quote, UTF-8, ..., last token -1 = every sheet into its own CSV.
_EVERY_SHEET_AS_CSV = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,true,false,false,-1"


def column(path: Path, sheet: str, name: str = "File") -> list[object]:
    """One column of a report's sheet, by header, without the header (or the demo's note above it)."""
    book = load_workbook(path, read_only=True)
    try:
        rows = list(book[sheet].iter_rows(values_only=True))
    finally:
        book.close()  # a read-only workbook keeps its file open until closed
    top = next(i for i, row in enumerate(rows) if name in row)
    index = list(rows[top]).index(name)
    return [row[index] for row in rows[top + 1:]]


def picture(colour: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    """A JPEG thumbnail of `size` pixels."""
    out = io.BytesIO()
    creative(colour, size).save(out, "JPEG")
    return out.getvalue()


def evidenced(name: str, probs: tuple[float, float, float], thumbnail_px: int = 96) -> Scored:
    """A creative as a model with an evidence index and Grad-CAM scores it: thumbnail, overlay, three look-alikes."""
    size = (thumbnail_px * 4 // 5, thumbnail_px)  # portrait, its longest side thumbnail_px, as the decoder makes it
    posts = tuple(Neighbour(f"post-{i}.jpg", f"2024-0{i + 1}-11", 9000 + i, 120, 9120 + i, 0.9,
                            picture((200, 60, 40), (80, 100))) for i in range(3))
    return Scored(name, f"/srv/outbox/scored/2026-01-02/{name}", name.encode().hex().ljust(64, "0")[:64],
                  ("Low", "Neutral", "High"), probs, 1080, 1350, "JPEG", 204_800, 1_700_000_000.0, 1_700_000_100.0,
                  picture((180, 40, 40), size), "", evidence=Lookalikes(posts, 9120.0, 0.8),
                  overlay=picture((40, 40, 200), size))


def lines_needed(text: str, width: float) -> int:
    """The fewest lines a wrapped cell of this width needs for the text, in the widest face seen here: LibreOffice
    drew 118 characters a line in a column 96 wide, in DejaVu Sans (where it has no Calibri)."""
    return math.ceil(len(text) / (1.2 * width))


def printed_scale(ws: Worksheet) -> float:
    """About the scale a sheet prints at: its columns (as Calibri 11 draws them, 96 dpi) fitted into fitToWidth
    pages of A4 across, each repeating the print title columns."""
    setup, margins = ws.page_setup, ws.page_margins
    paper_in = (297 if setup.orientation == "landscape" else 210) / 25.4
    printable = (paper_in - margins.left - margins.right) * 96
    widths = {n: (ws.column_dimensions[get_column_letter(n)].width or 8.43) * 7 + 5
              for n in range(1, ws.max_column + 1)}
    titles = ws.print_title_cols
    repeated = 0.0
    if titles:
        first, last = (ws[f"{letter}1"].column for letter in titles.replace("$", "").split(":"))
        repeated = sum(widths[n] for n in range(first, last + 1))
    pages = setup.fitToWidth if ws.sheet_properties.pageSetUpPr.fitToPage else 1
    return min(1.0, pages * printable / (sum(widths.values()) + (pages - 1) * repeated))


def files_across(reports: list[Path], sheet: str) -> list[str]:
    """Every File cell of one sheet across several reports."""
    return [str(name) for report in reports for name in column(report, sheet)]


def as_libreoffice_reads(report: Path, out: Path) -> dict[str, list[list[str]]] | None:
    """Every sheet as LibreOffice shows it, opened headlessly and saved as CSV; None (and a warning) without it."""
    soffice = tool_or_warn("soffice", "libreoffice-calc", "the report as LibreOffice shows it")
    if soffice is None:
        return None
    out.mkdir()
    proc = subprocess.run([soffice, "--headless", f"-env:UserInstallation=file://{out}/profile", "--convert-to",
                           _EVERY_SHEET_AS_CSV, "--outdir", str(out), str(report)],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    sheets = {}
    for path in out.glob(f"{report.stem}-*.csv"):
        with open(path, encoding="utf-8", newline="") as handle:
            sheets[path.stem.removeprefix(f"{report.stem}-")] = list(csv.reader(handle))
    return sheets
