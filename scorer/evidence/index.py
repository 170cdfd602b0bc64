"""The evidence index: the account's past posts with their embeddings, and the kNN search that finds look-alikes.

The index lives beside the model as `<stem>.index.parquet`, one row per post that survived
cleaning: source, date, likes, comments, total, class, split, a small thumbnail, the model's
embedding (the embedding) and its Engagement score. Search is brute-force cosine
similarity in numpy: every query is compared with every post, which is fine up to a few
hundred thousand posts (the embeddings are held in memory as float32).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from scorer.errors import ModelError
from scorer.fsutil import atomic_write
from scorer.results import Lookalikes, Neighbour

if TYPE_CHECKING:  # pyarrow's to_pandas imports pandas when an index is read; a start without one never does
    import pandas as pd

log = logging.getLogger(__name__)

#: Past posts shown for each creative.
NEIGHBOURS = 3
COLUMNS = ("source", "date", "likes", "comments", "total", "label", "split", "thumbnail", "embedding", "score",
           "predicted")
_META_KEY = b"scorer.evidence"


def index_path(model: Path) -> Path:
    """Where the evidence index of a model lives: `<stem>.index.parquet` beside it."""
    return model.with_name(model.stem + ".index.parquet")


def write_index(path: Path, frame: pd.DataFrame, model_sha256: str) -> None:
    """Write the index atomically, recording which model's embeddings it holds."""
    table = pa.Table.from_pandas(frame[list(COLUMNS)], preserve_index=False)
    meta = {**(table.schema.metadata or {}), _META_KEY: json.dumps({"model_sha256": model_sha256}).encode()}
    atomic_write(path, lambda tmp: pq.write_table(table.replace_schema_metadata(meta), tmp))


class EvidenceIndex:
    """The posts of an index in memory, with unit-length embeddings for cosine search."""

    def __init__(self, frame: pd.DataFrame, model_sha256: str, path: Path | None = None) -> None:
        self.frame = frame.reset_index(drop=True)
        self.model_sha256 = model_sha256
        self.path = path
        vectors = np.stack(self.frame["embedding"].to_numpy()).astype(np.float32)
        self._unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        self._totals = self.frame["total"].to_numpy(dtype=float)
        self._scores = np.sort(self.frame["score"].to_numpy(dtype=float))

    @classmethod
    def read(cls, path: Path, data: bytes) -> EvidenceIndex:
        """Load an index written by `write_index` from the bytes read (and checked) from `path`."""
        try:
            table = pq.read_table(pa.BufferReader(data))
            meta = json.loads((table.schema.metadata or {})[_META_KEY])
        except (pa.ArrowException, OSError, KeyError, ValueError) as exc:
            raise ModelError(f"evidence index {path} cannot be read ({type(exc).__name__}): rebuild it with "
                             f"`scorer index DATA --model MODEL`") from None
        frame = table.to_pandas()
        if missing := [c for c in COLUMNS if c not in frame.columns]:
            raise ModelError(f"evidence index {path} lacks {', '.join(missing)}: rebuild it with `scorer index`")
        return cls(frame, str(meta["model_sha256"]), path)

    def __len__(self) -> int:
        return len(self.frame)

    def nearest(self, embedding: np.ndarray, k: int = NEIGHBOURS,
                among: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers (N, k) of the k most similar posts, most similar first, and their cosine similarities."""
        query = np.asarray(embedding, dtype=np.float32)
        query = query / np.maximum(np.linalg.norm(query, axis=1, keepdims=True), 1e-12)
        sims = query @ self._unit.T
        if among is not None:
            sims[:, ~among] = -np.inf
        k = min(k, int(np.isfinite(sims[0]).sum()) if len(sims) else k)
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
        rows = np.take_along_axis(top, order, axis=1)
        return rows, np.take_along_axis(sims, rows, axis=1)

    def median_totals(self, rows: np.ndarray) -> np.ndarray:
        """The median total engagement of each row of neighbours: the kNN estimate."""
        medians: np.ndarray = np.median(self._totals[rows], axis=1)
        return medians

    def percentile(self, score: float) -> float:
        """The share of the account's past posts whose Engagement score is below `score`."""
        return float(np.searchsorted(self._scores, score, side="left") / max(len(self._scores), 1))

    def lookup(self, embedding: np.ndarray, scores: np.ndarray) -> list[Lookalikes]:
        """The evidence for each creative: its nearest posts, their median total and its account percentile."""
        rows, sims = self.nearest(embedding)
        medians = self.median_totals(rows)
        return [Lookalikes(tuple(self._neighbour(r, s) for r, s in zip(row, sim, strict=True)), float(median),
                         self.percentile(float(score)))
                for row, sim, median, score in zip(rows, sims, medians, scores, strict=True)]

    def _neighbour(self, row: int, similarity: float) -> Neighbour:
        post = self.frame.iloc[int(row)]
        thumb = post["thumbnail"]
        return Neighbour(str(post["source"]), str(post["date"] or ""), int(post["likes"]), int(post["comments"]),
                         int(post["total"]), float(similarity), bytes(thumb) if thumb is not None else None)


def load_evidence(model: Path, model_sha256: str, verify: Callable[[Path], bytes]) -> EvidenceIndex | None:
    """The model's evidence index, read once and verified against its pin by `verify`; None when there is none."""
    path = index_path(model)
    if not path.exists():
        return None
    index = EvidenceIndex.read(path, verify(path))  # the bytes that were hashed are the bytes that are loaded
    if index.model_sha256 != model_sha256:
        raise ModelError(f"evidence index {path} was built with another model (sha256 {index.model_sha256[:12]}…): "
                         f"rebuild it with `scorer index DATA --model {model}`")
    log.info("evidence index %s: %d past posts", path, len(index))
    return index
