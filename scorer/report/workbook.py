"""The Excel workbook: Ranking, Rejected, Duplicates and Model sheets. The only openpyxl import.

Every string that comes from outside (file names, reasons, class names) goes through
`_put_text`, so a name can neither become a formula nor crash the writer.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from openpyxl import Workbook
from openpyxl.drawing.image import Image as SheetImage
from openpyxl.formatting.rule import ColorScaleRule
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from scorer.fsutil import atomic_write, numbered, temp_path
from scorer.results import BatchResult, Duplicate, ModelInfo, Rejected, rank
from scorer.settings import ReportSettings
from scorer.textsafe import looks_like_formula, xml_text

REPORT_PREFIX = "engagement-report-"
FIXED_HEADERS = ("Rank", "File", "Predicted class", "Confidence", "Engagement score")
EXTRA_HEADERS = ("Thumbnail", "Pixels", "Format", "File size (KB)", "File date", "Scored at", "Notes", "Location",
                 "SHA-256")

_HEADER_FONT = Font(bold=True, color="FFFFFF")
_HEADER_FILL = PatternFill("solid", start_color="1F4E78")


@dataclass(frozen=True)
class ReportContent:
    """What one workbook shows: the outcomes, the model that scored them, and how the report looks."""

    result: BatchResult
    info: ModelInfo
    look: ReportSettings = ReportSettings()


def headers(classes: Sequence[str]) -> list[str]:
    """The Ranking sheet's column headers, in order."""
    return [*FIXED_HEADERS, *(f"P({c})" for c in classes), *EXTRA_HEADERS]


def report_name(now: datetime, suffix: str = "") -> str:
    """engagement-report-<YYYYmmdd-HHMMSS>[suffix].xlsx"""
    return f"{REPORT_PREFIX}{now:%Y%m%d-%H%M%S}{suffix}.xlsx"


def _put_text(ws: Worksheet, row: int, col: int, value: str) -> None:
    cell = ws.cell(row=row, column=col)
    cell.value = xml_text(value)
    # openpyxl turns any string starting with '=' into a formula; external text never is one.
    cell.data_type = "s"
    if looks_like_formula(cell.value):
        cell.quotePrefix = True  # and Excel must not re-read it as one when the cell is edited


def _header(ws: Worksheet, names: Sequence[str], widths: Sequence[float]) -> None:
    for col, (name, width) in enumerate(zip(names, widths, strict=True), start=1):
        cell = ws.cell(row=1, column=col, value=name)
        cell.font, cell.fill = _HEADER_FONT, _HEADER_FILL
        cell.alignment = Alignment(vertical="center", wrap_text=True)
        ws.column_dimensions[get_column_letter(col)].width = width
    ws.freeze_panes = "A2"
    ws.row_dimensions[1].height = 30
    # Printed, a sheet is as wide as the page and repeats its header row.
    ws.page_setup.orientation = "landscape"
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.fitToWidth, ws.page_setup.fitToHeight = 1, 0
    ws.print_title_rows = "1:1"


def _ranking(ws: Worksheet, content: ReportContent) -> None:
    classes = content.info.classes
    names = headers(classes)
    k = len(classes)
    thumbs = content.look.thumbnails and any(s.thumbnail for s in content.result.scored)
    thumb_width = content.look.thumbnail_px / 6.5 + 2 if thumbs else 10
    widths = [6, 40, 16, 12, 17, *([11] * k), thumb_width, 13, 8, 14, 18, 18, 30, 60, 20]
    _header(ws, names, widths)
    thumb_col = len(FIXED_HEADERS) + k + 1
    for row, s in enumerate(rank(content.result.scored), start=2):
        ws.cell(row=row, column=1, value=row - 1)
        _put_text(ws, row, 2, s.name)
        _put_text(ws, row, 3, s.predicted)
        ws.cell(row=row, column=4, value=s.confidence).number_format = "0.0%"
        ws.cell(row=row, column=5, value=round(s.score, 2)).number_format = "0.0"
        for i, p in enumerate(s.probs):
            ws.cell(row=row, column=6 + i, value=p).number_format = "0.0%"
        col = thumb_col + 1
        _put_text(ws, row, col, f"{s.width} × {s.height}")
        _put_text(ws, row, col + 1, s.format)
        ws.cell(row=row, column=col + 2, value=round(s.file_bytes / 1024, 1)).number_format = "#,##0.0"
        ws.cell(row=row, column=col + 3, value=datetime.fromtimestamp(s.modified)).number_format = "yyyy-mm-dd hh:mm"
        ws.cell(row=row, column=col + 4, value=datetime.fromtimestamp(s.scored_at)).number_format = "yyyy-mm-dd hh:mm"
        _put_text(ws, row, col + 5, s.notes)
        _put_text(ws, row, col + 6, s.location)
        _put_text(ws, row, col + 7, s.sha256)
        for c in range(1, len(names) + 1):
            ws.cell(row=row, column=c).alignment = Alignment(vertical="center")
        if thumbs and s.thumbnail:
            image = SheetImage(io.BytesIO(s.thumbnail))
            ws.add_image(image, f"{get_column_letter(thumb_col)}{row}")
            ws.row_dimensions[row].height = content.look.thumbnail_px * 0.75 + 4
    last = len(content.result.scored) + 1
    ws.auto_filter.ref = f"A1:{get_column_letter(len(names))}{max(last, 2)}"
    if content.result.scored:
        ws.conditional_formatting.add(
            f"E2:E{last}",
            ColorScaleRule(start_type="num", start_value=0, start_color="F8696B",
                           mid_type="num", mid_value=50, mid_color="FFEB84",
                           end_type="num", end_value=100, end_color="63BE7B"),
        )


def _rejected(ws: Worksheet, rejected: Sequence[Rejected]) -> None:
    _header(ws, ["File", "Reason", "Location"], [40, 60, 60])
    for row, r in enumerate(rejected, start=2):
        _put_text(ws, row, 1, r.name)
        _put_text(ws, row, 2, r.reason)
        _put_text(ws, row, 3, r.location)
    ws.auto_filter.ref = f"A1:C{max(len(rejected) + 1, 2)}"


def _duplicates(ws: Worksheet, duplicates: Sequence[Duplicate]) -> None:
    names = ["File", "Same content as", "Predicted class", "Engagement score", "First scored", "Location"]
    _header(ws, names, [40, 40, 16, 17, 18, 60])
    for row, d in enumerate(duplicates, start=2):
        _put_text(ws, row, 1, d.name)
        _put_text(ws, row, 2, d.original.name)
        _put_text(ws, row, 3, d.original.predicted)
        ws.cell(row=row, column=4, value=round(d.original.score, 2)).number_format = "0.0"
        first = ws.cell(row=row, column=5, value=datetime.fromtimestamp(d.original.scored_at))
        first.number_format = "yyyy-mm-dd hh:mm"
        _put_text(ws, row, 6, d.location)


def _model(ws: Worksheet, info: ModelInfo, generated: datetime) -> None:
    _header(ws, ["Item", "Value"], [26, 100])
    rows: list[tuple[str, str]] = [
        ("Model file", str(info.path)),
        ("SHA-256", info.sha256),
        ("Classes (low → high)", " < ".join(info.classes)),
        ("Device", info.device),
        ("Runtime", info.runtime),
        ("Preprocessing", info.preprocessing),
        ("Decoding", info.decode or "–"),
        ("ONNX export check", info.export_check or "–"),
        *((f"{name} version", version) for name, version in info.versions.items()),
        ("Report written", f"{generated:%Y-%m-%d %H:%M:%S}"),
        ("Engagement score", "100 × Σ P(class i) × i/(K−1), classes numbered 0 (lowest) to K−1 (highest)"),
    ]
    rows += [(f"Model card: {key}", str(value)) for key, value in info.card.items()]
    for row, (key, value) in enumerate(rows, start=2):
        _put_text(ws, row, 1, key)
        _put_text(ws, row, 2, value)


def build_workbook(content: ReportContent, generated: datetime) -> Workbook:
    """The report as an openpyxl Workbook."""
    wb = Workbook()
    ranking = wb.active
    ranking.title = "Ranking"
    _ranking(ranking, content)
    _rejected(wb.create_sheet("Rejected"), content.result.rejected)
    _duplicates(wb.create_sheet("Duplicates"), content.result.duplicates)
    _model(wb.create_sheet("Model"), content.info, generated)
    return wb


def save_report(path: Path, content: ReportContent, *, replace: bool = False, durable: bool = False) -> Path:
    """Write the workbook under a temporary name, then move it into place; return where it landed.

    With replace=False an existing file is never overwritten: the name gets -2, -3, ...
    """
    generated = datetime.now()

    def write(tmp: Path) -> None:
        build_workbook(content, generated).save(tmp)

    if replace:
        return atomic_write(path, write, durable=durable)
    tmp = temp_path(path)
    try:
        write(tmp)
        return _publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _publish(tmp: Path, path: Path) -> Path:
    for candidate in numbered(path):
        try:
            # A hard link fails if the name exists, so a report is never overwritten, even by a race.
            os.link(tmp, candidate)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
            if candidate.exists():  # a share without hard links: check, then rename
                continue
            os.replace(tmp, candidate)
        return candidate
    raise AssertionError("unreachable")
