"""The report's evidence columns: a video's filmstrip, where the model looked, the past posts a creative looks
like, and how they did.

They appear only when some creative has them: the filmstrip when a video was scored, overlays when
Grad-CAM ran, look-alikes when the model has an evidence index.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from openpyxl.cell import Cell, WriteOnlyCell
from openpyxl.drawing.image import Image as SheetImage
from openpyxl.drawing.spreadsheet_drawing import AnchorMarker, OneCellAnchor
from openpyxl.drawing.xdr import XDRPositiveSize2D
from openpyxl.styles import Alignment
from openpyxl.utils import get_column_letter
from openpyxl.utils.units import pixels_to_EMU
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

from scorer.report.filmstrip import filmstrip
from scorer.report.layout import LINE_PT
from scorer.results import Neighbour, Scored

FILMSTRIP = "Filmstrip"
FILMSTRIP_PX = 64  # a filmstrip frame's height: six of them across one column
FILMSTRIP_ROW_PT = (FILMSTRIP_PX + 19) * 0.75 + 4  # the frames, their borders and their captions
LOOKED = "Where the model looked"
LOOKS_LIKE = ("Looks like 1", "Looks like 2", "Looks like 3")
MEDIAN = "Neighbours' median"
PERCENTILE = "Account percentile"
# A past post's cell: its date and engagement on the first line, its thumbnail right below, then a gap as wide
# as the space between them is narrow, so that each caption reads with its own picture, not the next row's.
_NEIGHBOUR_PX = 52
_CAPTION_PT = LINE_PT + 2
_GAP_PT = 10.0
NEIGHBOUR_ROW_PT = _CAPTION_PT + _NEIGHBOUR_PX * 0.75 + _GAP_PT  # the row height the look-alikes need
_EMU_PER_PT = 12700


def evidence_headers(scored: Sequence[Scored]) -> list[str]:
    """The evidence columns this report has, in order."""
    names = [FILMSTRIP] if any(s.video for s in scored) else []
    names += [LOOKED] if any(s.overlay for s in scored) else []
    if any(s.evidence for s in scored):
        names += [*LOOKS_LIKE, MEDIAN, PERCENTILE]
    return names


def evidence_widths(names: Sequence[str], thumb_width: float) -> list[float]:
    """Column widths for `evidence_headers`."""
    return [thumb_width if name == LOOKED else 20 if name in LOOKS_LIKE else 24 if name == PERCENTILE else
            58 if name == FILMSTRIP else 12 for name in names]


def evidence_cells(ws: WriteOnlyWorksheet, row: int, first_col: int, names: Sequence[str], s: Scored) -> list[Cell]:
    """One creative's evidence cells for `ws.append`, their pictures anchored at `first_col` onwards."""
    cells = []
    for col, name in enumerate(names, start=first_col):
        c = WriteOnlyCell(ws)
        strip = filmstrip(s.video.frames, FILMSTRIP_PX) if name == FILMSTRIP and s.video is not None else None
        if strip is not None:
            ws.add_image(SheetImage(io.BytesIO(strip)), f"{get_column_letter(col)}{row}")
        elif name == LOOKED and s.overlay:
            ws.add_image(SheetImage(io.BytesIO(s.overlay)), f"{get_column_letter(col)}{row}")
        elif s.evidence is not None and name in LOOKS_LIKE:
            index = LOOKS_LIKE.index(name)
            if index < len(s.evidence.neighbours):
                _neighbour(ws, c, (col, row), s.evidence.neighbours[index])
        elif s.evidence is not None and name == MEDIAN:
            c.value = round(s.evidence.median_total)
            c.number_format = "#,##0"
        elif s.evidence is not None and name == PERCENTILE:
            c.value = s.evidence.percentile_text
        if name not in (LOOKED, FILMSTRIP) and not (name in LOOKS_LIKE and c.value):
            c.alignment = Alignment(vertical="center")
        cells.append(c)
    return cells


def _neighbour(ws: WriteOnlyWorksheet, c: Cell, where: tuple[int, int], post: Neighbour) -> None:
    # The date and the number are generated, never outside text, so they need no formula guard.
    c.value = f"{post.date or 'no date'} · {post.total:,}"
    c.alignment = Alignment(vertical="top")
    if post.thumbnail:
        image = SheetImage(io.BytesIO(post.thumbnail))
        scale = _NEIGHBOUR_PX / max(image.width, image.height)
        image.width, image.height = round(image.width * scale), round(image.height * scale)
        col, row = where
        start = AnchorMarker(col=col - 1, colOff=pixels_to_EMU(4), row=row - 1, rowOff=round(_CAPTION_PT * _EMU_PER_PT))
        size = XDRPositiveSize2D(pixels_to_EMU(image.width), pixels_to_EMU(image.height))
        ws.add_image(image, OneCellAnchor(_from=start, ext=size))


def evidence_rows(evidence: str, explain: str) -> list[tuple[str, str]]:
    """The Model sheet's lines about evidence: the index (or how to build one) and Grad-CAM."""
    rows = [("Evidence index", evidence)] if evidence else []
    return rows + ([("Where the model looked", explain)] if explain else [])
