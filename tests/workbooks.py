"""Reading the reports back in tests."""

from __future__ import annotations

from pathlib import Path

from openpyxl import load_workbook


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
