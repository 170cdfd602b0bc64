"""Reading the reports back in tests."""

from __future__ import annotations

import csv
import subprocess
from pathlib import Path

from openpyxl import load_workbook

from tests.helpers import tool_or_warn

# Filter options: comma, quote, UTF-8, ..., last token -1 = every sheet into its own CSV.
_EVERY_SHEET_AS_CSV = "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,true,false,false,-1"


def column(path: Path, sheet: str, name: str = "File") -> list[object]:
    """One column of a report's sheet, by header, without the header."""
    book = load_workbook(path, read_only=True)
    try:
        rows = list(book[sheet].iter_rows(values_only=True))
    finally:
        book.close()  # a read-only workbook keeps its file open until closed
    index = list(rows[0]).index(name)
    return [row[index] for row in rows[1:]]


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
