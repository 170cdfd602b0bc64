"""`scorer bulk --report`: the usual Excel workbook for the top N creatives in DEST.

An archive can hold more rows than a sheet (1,048,576), so the workbook ranks the best N
and lists at most N rejections; the Parquet files keep everything. Thumbnails are made
on the driver for those N only, from local files, in the decoding workers of `scorer score`
(a video's is its cover). A video's Format says its length and shape; DEST keeps no frame's
own score, so its Filmstrip cell stays empty.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as pads

from scorer.bulk.output import PART_GLOB, schema
from scorer.bulk.source import is_uri
from scorer.bulk.stages import VIDEO
from scorer.decoding.decode import Decoded
from scorer.decoding.pool import DecodeJob, DecodePool
from scorer.decoding.vet import ImageLimits
from scorer.decoding.video_probe import VideoLimits
from scorer.report.workbook import ReportContent, save_report
from scorer.results import BatchResult, ModelInfo, Rejected, Scored, Video
from scorer.settings import Settings


def top_result(dest: Path, classes: tuple[str, ...], top: int) -> BatchResult:
    """The N best scored rows of DEST as Scored results, and up to N of its rejected rows."""
    # the whole schema: a part written before a column was added reads as null there
    data = pads.dataset(sorted(dest.glob(PART_GLOB)), schema=schema(classes), format="parquet").to_table()
    scored = data.filter(pc.equal(data["status"], "scored"))
    best = scored.take(pc.select_k_unstable(scored, top, [("engagement_score", "descending")])).to_pylist()
    rejected = data.filter(pc.equal(data["status"], "rejected")).slice(0, top).to_pylist()
    return BatchResult(
        scored=[Scored(name=r["path"], location=r["path"], sha256=r["sha256"], classes=classes,
                       probs=tuple(r[f"p_{c}"] for c in classes), width=r["width"], height=r["height"],
                       format=r["format"], file_bytes=r["file_bytes"], modified=r["modified"].timestamp(),
                       scored_at=r["scored_at"].timestamp(), notes=r["notes"] or "",
                       video=Video(r["duration_s"], ()) if r["media"] == VIDEO else None) for r in best],
        rejected=[Rejected(r["path"], r["path"], r["reason"], r["sha256"] or "") for r in rejected],
    )


def save_top_report(path: Path, dest: Path, info: ModelInfo, settings: Settings, top: int) -> Path:
    """Write the workbook for DEST's top N creatives to `path`."""
    result = top_result(dest, info.classes, top)
    if settings.report.thumbnails:
        result.scored[:] = _with_thumbnails(result.scored, settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_report(path, ReportContent(result, info, settings.report), replace=True)


def _with_thumbnails(scored: list[Scored], settings: Settings) -> list[Scored]:
    """Each local creative with its thumbnail, where its file still holds the content that was scored."""
    local = {Path(s.location): s for s in scored if not is_uri(s.location)}
    job = DecodeJob(None, ImageLimits.from_settings(settings.images), settings.report.thumbnail_px,
                    video=VideoLimits.from_settings(settings.video))
    with DecodePool(job, settings.images.decode_workers, settings.images.decode_timeout) as pool:
        # gone or changed since it was scored: the row stays, without a picture
        pictures = {str(path): decoded.thumbnail for path, decoded in pool.imap(local)
                    if isinstance(decoded, Decoded) and decoded.sha256 == local[path].sha256}
    return [replace(s, thumbnail=pictures[s.location]) if s.location in pictures else s for s in scored]
