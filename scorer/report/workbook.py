"""The Excel workbook: Ranking, Rejected, Duplicates and Model sheets, streamed row by row.

Sheets are written in openpyxl's write-only mode, so memory holds one row at a time (and the
thumbnails). Every string that comes from outside (file names, reasons, class names) goes
through `cell`, so a name can neither become a formula nor crash the writer.
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
from openpyxl.cell import Cell, WriteOnlyCell
from openpyxl.drawing.image import Image as SheetImage
from openpyxl.formatting.rule import ColorScaleRule
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from scorer.fsutil import atomic_write, create_temp, numbered
from scorer.report.evidence_columns import evidence_cells, evidence_headers, evidence_rows, evidence_widths
from scorer.results import BatchResult, Duplicate, ModelInfo, Rejected, Scored, TrackSummary, rank
from scorer.settings import ReportSettings
from scorer.textsafe import display_text, looks_like_formula, xml_text

REPORT_PREFIX = "engagement-report-"
FIXED_HEADERS = ("Rank", "File", "Predicted class", "Confidence", "Engagement score")
#: Posting-time advice (scorer.context), present when some creative came with a plan and the combined model is in use.
ADVICE_HEADERS = ("Planned time", "Score at planned time", "Best times (coming week)")
EXTRA_HEADERS = ("Thumbnail", "Pixels", "Format", "File size (KB)", "File date", "Scored at", "Notes", "Location",
                 "SHA-256")

_HEADER_FONT = Font(bold=True, color="FFFFFF")
_HEADER_FILL = PatternFill("solid", start_color="1F4E78")
_MIDDLE = Alignment(vertical="center")
WARNING_FONT = Font(bold=True, color="C00000")


@dataclass(frozen=True)
class ReportContent:
    """What one workbook shows: the outcomes, the model that scored them, and how the report looks."""

    result: BatchResult
    info: ModelInfo
    look: ReportSettings = ReportSettings()
    track: TrackSummary | None = None  # the model's record on launched creatives, where `scorer outcomes` made one


def headers(classes: Sequence[str], evidence: Sequence[str] = ()) -> list[str]:
    """The Ranking sheet's column headers, in order; evidence columns (if any) follow the thumbnail."""
    return [*FIXED_HEADERS, *(f"P({c})" for c in classes), EXTRA_HEADERS[0], *evidence, *EXTRA_HEADERS[1:]]


def report_name(now: datetime, suffix: str = "") -> str:
    """engagement-report-<YYYYmmdd-HHMMSS>[suffix].xlsx"""
    return f"{REPORT_PREFIX}{now:%Y%m%d-%H%M%S}{suffix}.xlsx"


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


def header(ws: WriteOnlyWorksheet, names: Sequence[str], widths: Sequence[float]) -> None:
    """Append a sheet's styled header row; set its column widths, frozen header and page setup."""
    for col, width in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(col)].width = width
    ws.freeze_panes = "A2"
    ws.row_dimensions[1].height = 30
    page_wide(ws)
    ws.print_title_rows = "1:1"  # repeated on each printed page
    ws.append(header_row(ws, names))


def page_wide(ws: WriteOnlyWorksheet) -> None:
    """Printed, the sheet is as wide as a landscape page, however many pages long."""
    ws.page_setup.orientation = "landscape"
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.fitToWidth, ws.page_setup.fitToHeight = 1, 0


def _ranking_row(ws: WriteOnlyWorksheet, position: int, s: Scored, evidence: list[Cell]) -> list[Cell]:
    values: list[tuple[object, str | None]] = [
        (position, None), (display_text(s.name), None), (s.predicted, None), (s.confidence, "0.0%"),
        (round(s.score, 2), "0.0"), *((p, "0.0%") for p in s.probs), (None, None)]
    rest: list[tuple[object, str | None]] = [(f"{s.width} × {s.height}", None), (s.format, None),
        (round(s.file_bytes / 1024, 1), "#,##0.0"), (datetime.fromtimestamp(s.modified), "yyyy-mm-dd hh:mm"),
        (datetime.fromtimestamp(s.scored_at), "yyyy-mm-dd hh:mm"), (s.notes, None), (s.location, None),
        (s.sha256, None),
    ]
    row = [cell(ws, value, fmt) for value, fmt in values]
    tail = [cell(ws, value, fmt) for value, fmt in rest]
    for c in row + tail:
        c.alignment = _MIDDLE
    return row + evidence + tail


def _advice_cells(ws: WriteOnlyWorksheet, s: Scored) -> list[Cell]:
    """The planned time, the Engagement score there, and the best slots of the coming week (blank without advice)."""
    a = s.advice
    if a is None:
        return [cell(ws, None) for _ in ADVICE_HEADERS]
    score = round(a.planned_score, 1) if a.planned_score is not None else None
    cells = [cell(ws, a.planned_at or "not given"), cell(ws, score, "0.0"), cell(ws, a.best_text)]
    for c in cells:
        c.alignment = _MIDDLE
    return cells


def _ranking(ws: WriteOnlyWorksheet, content: ReportContent) -> None:
    classes = content.info.classes
    extra = evidence_headers(content.result.scored)
    scored = rank(content.result.scored)
    advice = list(ADVICE_HEADERS) if any(s.advice for s in scored) else []
    names = headers(classes, [*extra, *advice])
    k = len(classes)
    thumbs = content.look.thumbnails and any(s.thumbnail for s in scored)
    thumb_width = content.look.thumbnail_px / 6.5 + 2 if thumbs else 10
    widths = [6, 40, 16, 12, 17, *([11] * k), thumb_width, *evidence_widths(extra, content.look.thumbnail_px / 6.5 + 2),
              *([26, 12, 44] if advice else []), 13, 8, 14, 18, 18, 30, 60, 20]
    header(ws, names, widths)
    thumb_col = len(FIXED_HEADERS) + k + 1
    for row, s in enumerate(scored, start=2):
        # Images and row heights must be known before the row is streamed out.
        if thumbs and s.thumbnail:
            ws.add_image(SheetImage(io.BytesIO(s.thumbnail)), f"{get_column_letter(thumb_col)}{row}")
        evidence = evidence_cells(ws, row, thumb_col + 1, extra, s)
        if (thumbs and s.thumbnail) or s.overlay or s.evidence:
            # Look-alike cells hold a small picture with a line of text under it.
            ws.row_dimensions[row].height = max(content.look.thumbnail_px, 80 if extra else 0) * 0.75 + 4
        ws.append(_ranking_row(ws, row - 1, s, evidence + (_advice_cells(ws, s) if advice else [])))
    last = len(scored) + 1
    ws.auto_filter.ref = f"A1:{get_column_letter(len(names))}{max(last, 2)}"
    if scored:
        ws.conditional_formatting.add(
            f"E2:E{last}",
            ColorScaleRule(start_type="num", start_value=0, start_color="F8696B",
                           mid_type="num", mid_value=50, mid_color="FFEB84",
                           end_type="num", end_value=100, end_color="63BE7B"),
        )


def _rejected(ws: WriteOnlyWorksheet, rejected: Sequence[Rejected]) -> None:
    header(ws, ["File", "Reason", "Location"], [40, 60, 60])
    ws.auto_filter.ref = f"A1:C{max(len(rejected) + 1, 2)}"
    for r in rejected:
        ws.append([cell(ws, display_text(r.name)), cell(ws, r.reason), cell(ws, r.location)])


def _duplicates(ws: WriteOnlyWorksheet, duplicates: Sequence[Duplicate]) -> None:
    names = ["File", "Same content as", "Predicted class", "Engagement score", "First scored", "Location"]
    header(ws, names, [40, 40, 16, 17, 18, 60])
    for d in duplicates:
        ws.append([cell(ws, display_text(d.name)), cell(ws, display_text(d.original.name)),
                   cell(ws, d.original.predicted), cell(ws, round(d.original.score, 2), "0.0"),
                   cell(ws, datetime.fromtimestamp(d.original.scored_at), "yyyy-mm-dd hh:mm"), cell(ws, d.location)])


def _model(ws: WriteOnlyWorksheet, content: ReportContent, generated: datetime) -> None:
    header(ws, ["Item", "Value"], [26, 100])
    track = content.track
    if track is not None and track.guess:  # first, so nobody reads the scores without it
        warning = [cell(ws, "Warning"), cell(ws, f"Track record: {track.verdict}")]
        for c in warning:
            c.font = WARNING_FONT
        ws.append(warning)
    info = content.info
    rows: list[tuple[str, str]] = [
        ("Model file", str(info.path)),
        ("SHA-256", info.sha256),
        ("Classes (low → high)", " < ".join(info.classes)),
        ("Device", info.device),
        ("Runtime", info.runtime),
        ("Preprocessing", info.preprocessing),
        ("Decoding", info.decode or "–"),
        ("Precision", info.precision or "–"),
        ("ONNX export check", info.export_check or "–"),
        *((f"{name} version", version) for name, version in info.versions.items()),
        ("Report written", f"{generated:%Y-%m-%d %H:%M:%S}"),
        ("Engagement score", "100 × Σ P(class i) × i/(K−1), classes numbered 0 (lowest) to K−1 (highest)"),
        ("Posting time and caption", info.context or "image-only"),
    ]
    rows += evidence_rows(info.evidence, info.explain)
    rows += [(f"Model card: {key}", str(value)) for key, value in info.card.items()]
    rows += [(f"Track record: {key}", value) for key, value in (track.lines.items() if track else ())]
    for key, value in rows:
        ws.append([cell(ws, key), cell(ws, value)])


def add_sheets(wb: Workbook, content: ReportContent, generated: datetime) -> None:
    """Stream the Ranking, Rejected, Duplicates and Model sheets into a write-only workbook."""
    _ranking(wb.create_sheet("Ranking"), content)
    _rejected(wb.create_sheet("Rejected"), content.result.rejected)
    _duplicates(wb.create_sheet("Duplicates"), content.result.duplicates)
    _model(wb.create_sheet("Model"), content, generated)


def build_workbook(content: ReportContent, generated: datetime) -> Workbook:
    """The report as a write-only openpyxl Workbook, ready to save once."""
    wb = Workbook(write_only=True)
    add_sheets(wb, content, generated)
    return wb


def save_report(path: Path, content: ReportContent, *, replace: bool = False, durable: bool = False) -> Path:
    """Write the workbook under a temporary name, then move it into place; return where it landed.

    With replace=False an existing file is never overwritten: the name gets -2, -3, ...
    """
    # Built in memory, then written through a descriptor opened O_EXCL|O_NOFOLLOW: a link planted
    # in the outbox is never written through.
    buffer = io.BytesIO()
    build_workbook(content, datetime.now()).save(buffer)
    data = buffer.getvalue()
    if replace:
        return atomic_write(path, data, durable=durable)
    tmp, fd = create_temp(path)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
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
