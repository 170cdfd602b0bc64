"""`scorer bulk --report`: the usual Excel workbook for the top N creatives in DEST.

An archive can hold more rows than a sheet (1,048,576), so the workbook ranks the best N
and lists at most N rejections; the Parquet files keep everything. Thumbnails are made
on the driver for those N only, from local files, with the same vetting and decoding.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as pads

from scorer.bulk.output import PART_GLOB
from scorer.bulk.source import is_uri
from scorer.decoding.decode import decode_file
from scorer.decoding.vet import ImageLimits
from scorer.errors import ImageError
from scorer.report.workbook import ReportContent, save_report
from scorer.results import BatchResult, ModelInfo, Rejected, Scored
from scorer.settings import Settings


def top_result(dest: Path, classes: tuple[str, ...], top: int) -> BatchResult:
    """The N best scored rows of DEST as Scored results, and up to N of its rejected rows."""
    data = pads.dataset(sorted(dest.glob(PART_GLOB)), format="parquet").to_table()
    scored = data.filter(pc.equal(data["status"], "scored"))
    best = scored.take(pc.select_k_unstable(scored, top, [("engagement_score", "descending")])).to_pylist()
    rejected = data.filter(pc.equal(data["status"], "rejected")).slice(0, top).to_pylist()
    return BatchResult(
        scored=[Scored(name=r["path"], location=r["path"], sha256=r["sha256"], classes=classes,
                       probs=tuple(r[f"p_{c}"] for c in classes), width=r["width"], height=r["height"],
                       format=r["format"], file_bytes=r["file_bytes"], modified=r["modified"].timestamp(),
                       scored_at=r["scored_at"].timestamp(), notes=r["notes"] or "") for r in best],
        rejected=[Rejected(r["path"], r["path"], r["reason"], r["sha256"] or "") for r in rejected],
    )


def save_top_report(path: Path, dest: Path, info: ModelInfo, settings: Settings, top: int) -> Path:
    """Write the workbook for DEST's top N creatives to `path`."""
    result = top_result(dest, info.classes, top)
    if settings.report.thumbnails:
        limits = ImageLimits.from_settings(settings.images)
        result.scored[:] = [_with_thumbnail(s, limits, settings.report.thumbnail_px) for s in result.scored]
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_report(path, ReportContent(result, info, settings.report), replace=True)


def _with_thumbnail(s: Scored, limits: ImageLimits, px: int) -> Scored:
    if is_uri(s.location):
        return s
    try:
        decoded = decode_file(Path(s.location), None, limits, px)
    except ImageError:  # gone or changed since it was scored: the row stays, without a picture
        return s
    if decoded.sha256 != s.sha256:
        return s
    return replace(s, thumbnail=decoded.thumbnail)
