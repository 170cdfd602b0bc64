"""DEST, the Parquet folder of `scorer bulk`: its schema, what it already holds, and the parts a run adds.

A run writes a part at least every `bulk.flush_rows` rows, each renamed into place whole
(`part-<run>-<n>.parquet`), and the rows it holds when it stops for any reason, so a job
that is killed loses at most that many and `--resume` carries on from there (removing the
temporary part a kill may leave). The driver is the only writer: it drops a second result
for a path (a retried task) and marks content seen before as a duplicate.

The schema only grows: columns added later (a video's `media`, `duration_s`, `frames_scored`) go at
its end, so a part written before them holds a prefix of the columns, and reads as null there.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scorer import __version__
from scorer.bulk.stages import DUPLICATE, KNOWN, REFUSED, SCORED, VIDEO
from scorer.errors import ConfigError, ModelError
from scorer.fsutil import atomic_write, remove_temps
from scorer.results import engagement_score

PART_GLOB = "part-*.parquet"


def schema(classes: tuple[str, ...]) -> pa.Schema:
    """The columns of every part, in order; one `p_<class>` per class, lowest engagement first; new ones last."""
    stamp = pa.timestamp("us", tz="UTC")
    return pa.schema([
        ("path", pa.string()), ("sha256", pa.string()), ("status", pa.string()), ("reason", pa.string()),
        ("predicted", pa.string()), ("confidence", pa.float64()), ("engagement_score", pa.float64()),
        *((f"p_{c}", pa.float64()) for c in classes),
        ("width", pa.int32()), ("height", pa.int32()), ("format", pa.string()), ("file_bytes", pa.int64()),
        ("modified", stamp), ("notes", pa.string()), ("scored_at", stamp),
        ("model_sha256", pa.string()), ("scorer_version", pa.string()),
        ("media", pa.string()), ("duration_s", pa.float64()), ("frames_scored", pa.int32()),
    ])


@dataclass
class Done:
    """What DEST already holds: every path with a row, and the first path of each scored content."""

    paths: set[str] = field(default_factory=set)
    by_sha: dict[str, str] = field(default_factory=dict)


def read_done(dest: Path, model_sha256: str) -> Done:
    """Read DEST's parts for `--resume`, refusing damaged parts and parts scored by another model."""
    remove_temps([dest])  # a part being written when the last run was killed: its rows were not counted as done
    done = Done()
    for part in sorted(dest.glob(PART_GLOB)):
        table = _read_part(part)
        models = set(table.column("model_sha256").to_pylist()) - {model_sha256}
        if models:
            raise ConfigError(f"{part} was scored by another model (sha256 {models.pop()[:12]}…): "
                              "resume with that model, or write to a new --out folder")
        done.paths.update(table.column("path").to_pylist())
        for path, sha, status in zip(*(table.column(c).to_pylist() for c in ("path", "sha256", "status")),
                                     strict=True):
            if status == SCORED:
                done.by_sha.setdefault(sha, path)
    return done


def _read_part(part: Path) -> pa.Table:
    try:
        return pq.read_table(part, columns=["path", "sha256", "status", "model_sha256"])
    except (pa.ArrowException, OSError):  # truncated, overwritten, or not written by scorer bulk
        raise ConfigError(f"{part} is damaged: delete it and run again with --resume, "
                          "which scores its inputs again") from None


def require_empty(dest: Path) -> None:
    """A run without `--resume` starts from an empty DEST, so no old row is silently mixed in."""
    if any(dest.glob(PART_GLOB)):
        raise ConfigError(f"{dest} already holds results: pass --resume to add only new files, or choose a new --out")


class PartWriter:
    """Collects result rows from the pipeline and writes them to DEST in whole parts."""

    def __init__(self, dest: Path, classes: tuple[str, ...], model_sha256: str, done: Done, flush_rows: int) -> None:
        self._dest, self._classes, self._model, self._flush_rows = dest, classes, model_sha256, flush_rows
        self._schema = schema(classes)
        self._first = dict(done.by_sha)
        self.seen: set[str] = set()
        self.counts = {SCORED: 0, "rejected": 0, DUPLICATE: 0}
        self.parts: list[Path] = []
        self._rows: list[dict[str, Any]] = []
        self._run = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

    def take(self, batch: dict[str, Any]) -> int:
        """Add a batch of the pipeline's output; returns how many inputs it decided for the first time.

        Raises the worker's ModelError when its inference actor refused the shipped model.
        """
        refused = np.flatnonzero(np.asarray(batch["status"]) == REFUSED)
        if len(refused):
            raise ModelError(str(batch["reason"][refused[0]]))
        added = 0
        now = time.time()
        for i, path in enumerate(batch["path"]):
            path = str(path)
            if path in self.seen:  # a retried task delivered this input again
                continue
            self.seen.add(path)
            self._rows.append(self._row(batch, i, path, now))
            self.counts[self._rows[-1]["status"]] += 1
            added += 1
            if len(self._rows) >= self._flush_rows:  # bounds what a hard kill of the driver can lose
                self.flush()
        return added

    def _row(self, batch: dict[str, Any], i: int, path: str, now: float) -> dict[str, Any]:
        sha, status, reason = str(batch["sha256"][i]) or None, str(batch["status"][i]), str(batch["reason"][i])
        row: dict[str, Any] = {"path": path, "sha256": sha, "status": status, "reason": reason or None,
                               "model_sha256": self._model, "scorer_version": __version__}
        if status == "rejected":
            return row
        if status == KNOWN or sha in self._first:
            row.update(status=DUPLICATE, reason=f"same content as {self._first[str(sha)]}")
            if status == KNOWN:  # skipped unread by --resume: only its hash is known
                return row
        else:
            self._first[str(sha)] = path
            probs = [float(p) for p in np.asarray(batch["probs"][i])]
            best = int(np.argmax(probs))
            row.update(predicted=self._classes[best], confidence=probs[best],
                       engagement_score=engagement_score(probs), scored_at=now,
                       **{f"p_{c}": p for c, p in zip(self._classes, probs, strict=True)})
        video = batch["media"][i] == VIDEO
        row.update(width=int(batch["width"][i]), height=int(batch["height"][i]), format=str(batch["format"][i]),
                   file_bytes=int(batch["file_bytes"][i]), modified=float(batch["modified"][i]),
                   notes=str(batch["notes"][i]) or None, media=str(batch["media"][i]),
                   duration_s=float(batch["duration"][i]) if video else None, frames_scored=int(batch["frames"][i]))
        return row

    def flush(self) -> None:
        """Write the rows collected so far as one part, atomically."""
        if not self._rows:
            return
        columns = {name: [r.get(name) for r in self._rows] for name in self._schema.names}
        for stamp in ("modified", "scored_at"):
            columns[stamp] = [None if v is None else int(v * 1e6) for v in columns[stamp]]
        table = pa.table(columns, schema=self._schema)
        part = self._dest / f"part-{self._run}-{len(self.parts):05d}.parquet"
        atomic_write(part, lambda tmp: pq.write_table(table, tmp), durable=True)
        self.parts.append(part)
        self._rows.clear()
