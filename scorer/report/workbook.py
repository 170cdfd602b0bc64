"""The Excel workbook: Ranking, Rejected, Duplicates and Model sheets, streamed row by row.

Sheets are written in openpyxl's write-only mode, so memory holds one row at a time (and the
thumbnails). Every string that comes from outside (file names, reasons, class names) goes
through `cell` (scorer.report.layout), so a name can neither become a formula nor crash the writer.
"""

from __future__ import annotations

import errno
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from openpyxl import Workbook
from openpyxl.cell import Cell
from openpyxl.drawing.image import Image as SheetImage
from openpyxl.formatting.rule import ColorScaleRule
from openpyxl.styles import Alignment
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from scorer.fsutil import atomic_write, create_temp, numbered
from scorer.report.evidence_columns import (
    FILMSTRIP_ROW_PT,
    NEIGHBOUR_ROW_PT,
    evidence_cells,
    evidence_headers,
    evidence_rows,
    evidence_widths,
)
from scorer.report.layout import WARNING_FONT, WRAP, WRAP_MIDDLE, append_fitted, cell, header
from scorer.results import BatchResult, Duplicate, ModelInfo, Rejected, Scored, rank
from scorer.settings import ReportSettings
from scorer.textsafe import display_text
from scorer.track_record import TrackRecord

REPORT_PREFIX = "engagement-report-"
FIXED_HEADERS = ("Rank", "File", "Predicted class", "Confidence", "Engagement score")
#: Posting-time advice (scorer.context), present when some creative came with a plan and the combined model is in use.
ADVICE_HEADERS = ("Planned time", "Score at planned time", "Best times (coming week)")
EXTRA_HEADERS = ("Thumbnail", "Pixels", "Format", "File size (KB)", "File date", "Scored at", "Notes", "Location",
                 "SHA-256")

_MIDDLE = Alignment(vertical="center")
_WRAPPED = {"File", "Notes", "Location", "SHA-256", ADVICE_HEADERS[2]}  # text that may be longer than its column
_PAGES_WIDE = 3  # the Ranking sheet prints this many A4 pages across, at most
DEMO_NOTE = "Demo model: trained by `scorer demo` on synthetic images. Its scores say nothing about real creatives."
DEMO_LINE = ("trained by `scorer demo` on synthetic images, where warm colours were given more likes: it knows nothing "
             "about real creatives. Train one on the account's own posts with `scorer train`.")


@dataclass(frozen=True)
class ReportContent:
    """What one workbook shows: the outcomes, the model that scored them, and how the report looks."""

    result: BatchResult
    info: ModelInfo
    style: ReportSettings = ReportSettings()
    track: TrackRecord | None = None  # its track record on launched creatives, once `scorer outcomes` made one


def headers(classes: Sequence[str], evidence: Sequence[str] = ()) -> list[str]:
    """The Ranking sheet's column headers, in order; evidence columns (if any) follow the thumbnail."""
    return [*FIXED_HEADERS, *(f"P({c})" for c in classes), EXTRA_HEADERS[0], *evidence, *EXTRA_HEADERS[1:]]


def report_name(now: datetime, suffix: str = "") -> str:
    """engagement-report-<YYYYmmdd-HHMMSS>[suffix].xlsx"""
    return f"{REPORT_PREFIX}{now:%Y%m%d-%H%M%S}{suffix}.xlsx"


def demo_model(model: Path) -> bool:
    """Whether `model` is the one `scorer demo` trains: models/demo.pkl, its card naming the demo's generated posts."""
    # models/demo.pkl alone is no proof: `scorer train` exports there too when config.yaml keeps the default
    if model.name != "demo.pkl":
        return False
    try:
        card = json.loads(model.with_suffix(".card.json").read_text(encoding="utf-8"))
        source = Path(card["data"]["source"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return source == model.absolute().parent.parent / "demo" / "posts"  # as prepare_demo lays them out


def _ranking_row(ws: WriteOnlyWorksheet, position: int, s: Scored, evidence: list[Cell]) -> list[Cell]:
    values: list[tuple[object, str | None]] = [
        (position, None), (display_text(s.name), None), (s.predicted, None), (s.confidence, "0.0%"),
        (round(s.score, 2), "0.0"), *((p, "0.0%") for p in s.probs), (None, None)]
    rest: list[tuple[object, str | None]] = [(f"{s.width} × {s.height}", None), (s.media, None),
        (round(s.file_bytes / 1024, 1), "#,##0.0"), (datetime.fromtimestamp(s.modified), "yyyy-mm-dd hh:mm"),
        (datetime.fromtimestamp(s.scored_at), "yyyy-mm-dd hh:mm"), (s.notes, None), (s.location, None),
        (s.sha256, None),
    ]
    row = [cell(ws, value, fmt) for value, fmt in values]
    tail = [cell(ws, value, fmt) for value, fmt in rest]
    for c, name in zip(row + tail, headers(s.classes), strict=True):
        c.alignment = WRAP_MIDDLE if name in _WRAPPED else _MIDDLE
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
    cells[2].alignment = WRAP_MIDDLE
    return cells


def _ranking(ws: WriteOnlyWorksheet, content: ReportContent) -> None:
    classes = content.info.classes
    extra = evidence_headers(content.result.scored)
    scored = rank(content.result.scored)
    advice = list(ADVICE_HEADERS) if any(s.advice for s in scored) else []
    names = headers(classes, [*extra, *advice])
    k = len(classes)
    thumbs = content.style.thumbnails and any(s.thumbnail for s in scored)
    thumb_width = content.style.thumbnail_px / 6.5 + 2 if thumbs else 10
    widths = [6, 36, 16, 12, 17, *([11] * k), thumb_width,
              *evidence_widths(extra, content.style.thumbnail_px / 6.5 + 2),
              *([26, 12, 44] if advice else []), 13, 17, 14, 18, 18, 26, 40, 34]  # SHA-256: two lines
    top = header(ws, names, widths, DEMO_NOTE if demo_model(content.info.path) else "", _PAGES_WIDE)
    thumb_col = len(FIXED_HEADERS) + k + 1
    # A row with pictures is as tall as the thumbnail (and the overlay, drawn the same size) and the look-alikes.
    height = max(content.style.thumbnail_px * 0.75 + 4, NEIGHBOUR_ROW_PT if any(s.evidence for s in scored) else 0,
                 FILMSTRIP_ROW_PT if any(s.video for s in scored) else 0)
    for row, s in enumerate(scored, start=top + 1):
        # Images and row heights must be known before the row is streamed out.
        if thumbs and s.thumbnail:
            ws.add_image(SheetImage(io.BytesIO(s.thumbnail)), f"{get_column_letter(thumb_col)}{row}")
        evidence = evidence_cells(ws, row, thumb_col + 1, extra, s)
        pictures = (thumbs and s.thumbnail) or s.overlay or s.evidence or s.video
        cells = _ranking_row(ws, row - top, s, evidence + (_advice_cells(ws, s) if advice else []))
        append_fitted(ws, row, cells, widths, height if pictures else 0.0)
    last = len(scored) + top
    ws.auto_filter.ref = f"A{top}:{get_column_letter(len(names))}{max(last, top + 1)}"
    if scored:
        ws.conditional_formatting.add(
            f"E{top + 1}:E{last}",
            ColorScaleRule(start_type="num", start_value=0, start_color="F8696B",
                           mid_type="num", mid_value=50, mid_color="FFEB84",
                           end_type="num", end_value=100, end_color="63BE7B"),
        )


def _rejected(ws: WriteOnlyWorksheet, rejected: Sequence[Rejected]) -> None:
    widths = [36, 60, 44]
    header(ws, ["File", "Reason", "Location"], widths)
    ws.auto_filter.ref = f"A1:C{max(len(rejected) + 1, 2)}"
    for row, r in enumerate(rejected, start=2):
        append_fitted(ws, row, _wrapped([cell(ws, display_text(r.name)), cell(ws, r.reason), cell(ws, r.location)]),
                      widths)


def _duplicates(ws: WriteOnlyWorksheet, duplicates: Sequence[Duplicate]) -> None:
    names = ["File", "Same content as", "Predicted class", "Engagement score", "First scored", "Location"]
    widths = [32, 32, 16, 17, 18, 44]
    header(ws, names, widths)
    for row, d in enumerate(duplicates, start=2):
        append_fitted(ws, row, _wrapped([cell(ws, display_text(d.name)), cell(ws, display_text(d.original.name)),
                                         cell(ws, d.original.predicted), cell(ws, round(d.original.score, 2), "0.0"),
                                         cell(ws, datetime.fromtimestamp(d.original.scored_at), "yyyy-mm-dd hh:mm"),
                                         cell(ws, d.location)]), widths)


def _wrapped(cells: list[Cell]) -> list[Cell]:
    """The cells, their text wrapped within its column: a long name or path stays on the page."""
    for c in cells:
        c.alignment = WRAP
    return cells


def _model(ws: WriteOnlyWorksheet, content: ReportContent, generated: datetime) -> None:
    widths = (30, 96)  # one landscape page at full size; the longer lines wrap
    header(ws, ["Item", "Value"], widths)
    info, track = content.info, content.track
    # first, so nobody reads the scores without them
    warnings = [("Demo model", DEMO_LINE)] if demo_model(info.path) else []
    if track is not None and track.no_better_than_guess:
        warnings.append(("Warning", f"Track record: {track.verdict}"))
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
        ("Videos", info.video or "–"),
    ]
    rows += evidence_rows(info.evidence, info.explain)
    rows += [(f"Model card: {key}", str(value)) for key, value in info.card.items()]
    rows += [(f"Track record: {key}", value) for key, value in (track.headline.items() if track else ())]
    for row, (key, value) in enumerate([*warnings, *rows], start=2):
        line = _wrapped([cell(ws, key), cell(ws, value)])
        if row < 2 + len(warnings):
            for c in line:
                c.font = WARNING_FONT
        append_fitted(ws, row, line, widths)


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
