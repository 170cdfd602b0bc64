"""outbox/latest.xlsx: a Summary sheet that counts the whole window, then the report's sheets bounded to its best rows,
then the model's Track record on launched creatives (scorer.outcomes).

Its cost is bounded by `watch.latest_rows`, not by the history: the sheets list at most that
many rows each, the Summary counts one line per day, and everything is streamed in
openpyxl's write-only mode. The Summary says in words what is listed and what is only counted.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from openpyxl import Workbook
from openpyxl.cell import Cell
from openpyxl.drawing.image import Image as SheetImage
from openpyxl.styles import Alignment
from openpyxl.utils import get_column_letter
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from scorer.fsutil import atomic_write
from scorer.report.layout import BOLD, WARNING_FONT, WRAP, cell, header_row, printed, wrapped_height
from scorer.report.workbook import ReportContent, add_sheets
from scorer.track_record import Launch

LATEST_NAME = "latest.xlsx"  # in outbox/: the whole window of the watch service, rebuilt in the background
_MIDDLE = Alignment(vertical="center")
LAUNCH_HEADERS = ("Posted", "Post", "Post as launched", "Creative", "Creative as scored", "Predicted class",
                  "Engagement score", "Likes + comments", "Real class", "Counted")
NO_RECORD = ("No track record for this model yet: a week or more after launch, run `scorer outcomes DATA` on a fresh "
             "download of the account's posts (a posts.csv or an Instaloader folder).")


@dataclass(frozen=True)
class DayCount:
    """What one day of the window holds: scored creatives by predicted class, rejected files, duplicates."""

    day: date
    classes: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    duplicates: int = 0

    @property
    def scored(self) -> int:
        """Creatives scored that day."""
        return sum(self.classes.values())


@dataclass(frozen=True)
class Window:
    """Everything in latest.xlsx's window, counted; the rows it lists are the ReportContent beside it."""

    since: datetime
    days: int
    limit: int
    classes: tuple[str, ...]
    per_day: tuple[DayCount, ...]
    newest_batch: int

    def total(self) -> DayCount:
        """The whole window as one count."""
        classes = {c: sum(d.classes.get(c, 0) for d in self.per_day) for c in self.classes}
        return DayCount(self.since.date(), classes, sum(d.rejected for d in self.per_day),
                        sum(d.duplicates for d in self.per_day))


def save_latest(path: Path, content: ReportContent, window: Window) -> Path:
    """Write latest.xlsx atomically: Summary, then Ranking, Rejected, Duplicates, Model and Track record."""
    generated = datetime.now()

    def write(tmp: Path) -> None:
        wb = Workbook(write_only=True)
        _summary(wb.create_sheet("Summary"), content, window, generated)
        add_sheets(wb, content, generated)
        track_sheet(wb.create_sheet("Track record"), content, window.limit)
        wb.save(tmp)

    return atomic_write(path, write)


def _limits(content: ReportContent, window: Window, generated: datetime) -> list[str]:
    """The workbook's limits in words: what it lists, out of how many, and where the rest is."""
    total, result = window.total(), content.result
    since = f"{window.since:%Y-%m-%d %H:%M}"
    return [
        f"Ranking lists the best {len(result.scored):,} of the {total.scored:,} creatives scored since {since} "
        f"(the last {window.days} days, watch.latest_days), best first, with thumbnails: at most "
        f"{window.limit:,} rows (watch.latest_rows).",
        f"Rejected lists the newest {len(result.rejected):,} of {total.rejected:,} rejected files, Duplicates "
        f"the newest {len(result.duplicates):,} of {total.duplicates:,}; the table below counts every one.",
        "Each batch report (engagement-report-<date>-<time>-batch<N>.xlsx) lists all of its own batch.",
        f"Written {generated:%Y-%m-%d %H:%M:%S}, with every batch up to batch {window.newest_batch}.",
    ]


def _summary(ws: WriteOnlyWorksheet, content: ReportContent, window: Window, generated: datetime) -> None:
    names = ["Day", "Scored", *window.classes, "Rejected", "Duplicates"]
    widths = [14, 10, *([12] * len(window.classes)), 10, 11]
    for col, width in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(col)].width = width
    lines = _limits(content, window, generated)
    table = len(lines) + 3  # the title, the lines and a blank row come first
    printed(ws, title_rows=f"{table}:{table}", portrait=True)  # one page wide: the table is narrow
    title = cell(ws, f"latest.xlsx: the best creatives of the last {window.days} days")
    title.font = BOLD
    ws.append([title])
    _sentences(ws, lines, widths, start=2)
    ws.append([])
    ws.append(header_row(ws, names))
    for day in window.per_day:
        ws.append(_day_row(ws, day, window.classes))
    total = _day_row(ws, window.total(), window.classes, "Total")
    for c in total:
        c.font = BOLD
    ws.append(total)


def _sentences(ws: WriteOnlyWorksheet, lines: list[str], widths: Sequence[float], start: int) -> None:
    """Each line as a paragraph as wide as the table below it, wrapped, so that no sentence runs off the page."""
    last = get_column_letter(len(widths))
    for row, line in enumerate(lines, start=start):
        ws.merged_cells.add(f"A{row}:{last}{row}")
        ws.row_dimensions[row].height = wrapped_height([(line, sum(widths))])
        c = cell(ws, line)
        c.alignment = WRAP
        ws.append([c])


def _day_row(ws: WriteOnlyWorksheet, day: DayCount, classes: tuple[str, ...], label: str = "") -> list[Cell]:
    first = cell(ws, label) if label else cell(ws, day.day, "yyyy-mm-dd")
    return [first, cell(ws, day.scored), *(cell(ws, day.classes.get(c, 0)) for c in classes),
            cell(ws, day.rejected), cell(ws, day.duplicates)]


def track_sheet(ws: WriteOnlyWorksheet, content: ReportContent, limit: int) -> None:
    """The Track record sheet: the figures with the verdict first, then each launched pair, newest post first."""
    track, style = content.track, content.style
    thumb_width = style.thumbnail_px / 6.5 + 2
    widths = [22, 24, thumb_width, 24, thumb_width, 16, 17, 16, 14, 10]
    for col, width in enumerate(widths, start=1):
        ws.column_dimensions[get_column_letter(col)].width = width
    printed(ws)
    title = cell(ws, f"Track record of model {content.info.sha256[:12]}…: how its picks did once launched")
    title.font = BOLD
    ws.append([title])
    if track is None:
        _sentences(ws, [NO_RECORD], widths, start=2)
        return
    last, lines = get_column_letter(len(widths)), track.headline
    for row, (key, value) in enumerate(lines.items(), start=2):
        # the figures over every other column: a long verdict wraps on the page
        ws.merged_cells.add(f"B{row}:{last}{row}")
        ws.row_dimensions[row].height = wrapped_height([(key, widths[0]), (value, sum(widths[1:]))])
        line = [cell(ws, key), cell(ws, value)]
        for c in line:
            c.alignment = WRAP
            if key == "Verdict":
                c.font = WARNING_FONT if track.no_better_than_guess else BOLD
        ws.append(line)
    _sentences(ws, [f"Below: the newest {len(track.launches):,} launched creatives (at most {limit:,}, "
                    "watch.latest_rows). Counted: posted after the creative was scored and at least "
                    "outcomes.min_age_days old; only those make the figures above."], widths, len(lines) + 2)
    ws.append([])
    first = len(lines) + 5  # title, the lines, the note, a blank row and the header come first
    ws.row_dimensions[first - 1].height = 30
    ws.append(header_row(ws, LAUNCH_HEADERS))
    for row, launch in enumerate(reversed(track.launches), start=first):  # the newest post first
        # Images and row heights must be known before the row is streamed out.
        pictures = [(launch.post_thumbnail, "C"), (launch.creative.thumbnail, "E")] if style.thumbnails else []
        for picture, column in pictures:
            if picture:
                ws.add_image(SheetImage(io.BytesIO(picture)), f"{column}{row}")
        if any(picture for picture, _ in pictures):
            ws.row_dimensions[row].height = style.thumbnail_px * 0.75 + 4
        ws.append(_launch_row(ws, launch, launch.counted(track.settled)))


def _launch_row(ws: WriteOnlyWorksheet, launch: Launch, counted: bool) -> list[Cell]:
    posted = (cell(ws, datetime.fromtimestamp(launch.posted_at), "yyyy-mm-dd hh:mm") if launch.posted_at is not None
              else cell(ws, "no date"))
    creative = launch.creative
    cells = [posted, cell(ws, launch.post), cell(ws, None), cell(ws, creative.name), cell(ws, None),
             cell(ws, creative.predicted), cell(ws, creative.score, "0.0"), cell(ws, launch.total, "#,##0"),
             cell(ws, launch.real_class), cell(ws, "yes" if counted else "no")]
    for c in cells:
        c.alignment = _MIDDLE
    return cells
