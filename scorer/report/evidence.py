"""The report's evidence columns: where the model looked, the past posts a creative looks like, and how they did.

They appear only when some creative has them: overlays when Grad-CAM ran, look-alikes when
the model has an evidence index.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from openpyxl.drawing.image import Image as SheetImage
from openpyxl.styles import Alignment
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.worksheet import Worksheet

from scorer.results import Neighbour, Scored

LOOKED = "Where the model looked"
LOOKS_LIKE = ("Looks like 1", "Looks like 2", "Looks like 3")
MEDIAN = "Neighbours' median"
PERCENTILE = "Account percentile"
# Past posts' thumbnails are drawn this size, leaving room in the cell for their date and engagement below.
_NEIGHBOUR_PX = 52


def evidence_headers(scored: Sequence[Scored]) -> list[str]:
    """The evidence columns this report has, in order."""
    names = [LOOKED] if any(s.overlay for s in scored) else []
    if any(s.evidence for s in scored):
        names += [*LOOKS_LIKE, MEDIAN, PERCENTILE]
    return names


def evidence_widths(names: Sequence[str], thumb_width: float) -> list[float]:
    """Column widths for `evidence_headers`."""
    return [thumb_width if name == LOOKED else 20 if name in LOOKS_LIKE else 24 if name == PERCENTILE else 12
            for name in names]


def put_evidence(ws: Worksheet, row: int, first_col: int, names: Sequence[str], s: Scored) -> None:
    """Fill one creative's evidence cells, starting at `first_col`."""
    for col, name in enumerate(names, start=first_col):
        cell = ws.cell(row=row, column=col)
        if name == LOOKED and s.overlay:
            ws.add_image(SheetImage(io.BytesIO(s.overlay)), f"{get_column_letter(col)}{row}")
        elif s.evidence is None:
            continue
        elif name in LOOKS_LIKE:
            index = LOOKS_LIKE.index(name)
            if index < len(s.evidence.neighbours):
                _neighbour(ws, cell.coordinate, s.evidence.neighbours[index])
                cell.alignment = Alignment(vertical="bottom", wrap_text=True)
        elif name == MEDIAN:
            cell.value = round(s.evidence.median_total)
            cell.number_format = "#,##0"
        elif name == PERCENTILE:
            cell.value = s.evidence.percentile_text


def _neighbour(ws: Worksheet, where: str, post: Neighbour) -> None:
    cell = ws[where]
    # The date and the number are generated, never outside text, so they need no formula guard.
    cell.value = f"{post.date or 'no date'} · {post.total:,}"
    if post.thumbnail:
        image = SheetImage(io.BytesIO(post.thumbnail))
        scale = _NEIGHBOUR_PX / max(image.width, image.height)
        image.width, image.height = round(image.width * scale), round(image.height * scale)
        ws.add_image(image, where)


def evidence_rows(evidence: str, explain: str) -> list[tuple[str, str]]:
    """The Model sheet's lines about evidence: the index (or how to build one) and Grad-CAM."""
    rows = [("Evidence index", evidence)] if evidence else []
    return rows + ([("Where the model looked", explain)] if explain else [])
