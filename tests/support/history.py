"""A synthetic history in the ledger: many scored creatives in dated batches, as months of service leave them.

The rows are recorded through the real Ledger; only the batches' dates are then set back in time.
"""

from __future__ import annotations

import hashlib
import io
import random
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from scorer.ledger.schema import LEDGER_NAME, Candidate, Entry
from scorer.ledger.store import Ledger
from scorer.outcomes.run import track_record
from scorer.results import ModelInfo, Scored
from scorer.settings import Settings
from scorer.track_record import Launch, TrackRecord
from scorer.training.evaluate import spearman
from scorer.training.labels import label
from tests.support.imagegen import creative

CLASSES = ("Low", "Neutral", "High")
INFO = ModelInfo(Path("/models/history.pkl"), "cd" * 32, CLASSES, "cpu", "onnxruntime", "crop to 224×224", {})


def thumbnail(px: int = 96) -> bytes:
    """A real JPEG thumbnail, as the decoder makes them."""
    out = io.BytesIO()
    creative((220, 50, 40), (px, px * 4 // 5)).save(out, "JPEG", quality=80)
    return out.getvalue()


def fill_history(state: Path, scored: int, *, rejected_every: int = 0, per_batch: int = 200, days: int = 20,
                 thumb: bytes | None = None, seed: int = 0, mark_written: bool = True,
                 prefix: str = "history", info: ModelInfo = INFO) -> list[Scored]:
    """Record `scored` creatives (and a rejected file every `rejected_every`) in batches spread over `days` days.

    Returns the scored creatives, each with `scored_at` set to its batch's date. With `mark_written`
    the ledger's latest.xlsx mark is set to the last batch, as if latest.xlsx had been written after it.
    """
    rng = random.Random(seed)
    now = time.time()
    made: list[Scored] = []
    dates: list[tuple[float, int]] = []
    ledger = Ledger(state)
    try:
        for start in range(0, scored, per_batch):
            when = now - 60 - (days - 1) * 86400 * (1 - start / scored)  # oldest first, up to a minute ago
            entries = []
            for i in range(start, min(scored, start + per_batch)):
                entries.append(_scored_entry(f"{prefix}-{i:06}.jpg", rng, when, thumb))
                made.append(entries[-1].scored)  # type: ignore[arg-type]
                if rejected_every and i % rejected_every == 0:
                    entries.append(Entry(_candidate(f"{prefix}-broken-{i:06}.jpg", None), "rejected",
                                         reason="file is incomplete or corrupt"))
            batch, _ = ledger.write_batch(entries, info, lambda n: state / f"history-batch{n}.xlsx")
            ledger.mark_reported(batch)
            dates.append((when, batch))
        if mark_written:
            ledger.put("latest_batch", str(ledger.last_batch()))
    finally:
        ledger.close()
    with sqlite3.connect(state / LEDGER_NAME) as db:
        db.executemany("UPDATE batches SET created = ? WHERE id = ?", dates)
    return made


def record_launches(state: Path, launched: Sequence[Scored], totals: Sequence[int], *, after_days: float = 1.0,
                    now: float | None = None, thumb: bytes | None = None, model: str = INFO.sha256,
                    formats: Sequence[str] | None = None) -> TrackRecord:
    """Keep each creative as launched `after_days` after scoring with these likes (as posts of these formats, all
    images by default), and the model's track record.

    The launches go through the real labelling rule and Launches.put, and the track record is computed and
    kept as `scorer outcomes` does after matching; `now` defaults to a month on, when every post is mature.
    """
    settings = Settings()
    posted = [s.scored_at + after_days * 86400 for s in launched]
    table = label(pd.DataFrame({"likes": list(totals), "comments": [0] * len(totals), "posted_at": posted}),
                  settings.train.label)
    launches = [Launch(f"post-{i:03}.jpg", f"{i:064x}", s, model, 0.97, when, int(total), 0, float(value), str(cls),
                       thumb, fmt)
                for i, (s, when, total, value, cls, fmt) in enumerate(
                    zip(launched, posted, totals, table["value"], table["label"], formats or ["image"] * len(launched),
                        strict=True))]
    ledger = Ledger(state)
    try:
        ledger.launches.put(launches)
        now = time.time() + 30 * 86400 if now is None else now
        track = track_record(ledger.launches, ledger.launches.creatives(), model, settings, now, 0)
        ledger.launches.put_track_record(track)
    finally:
        ledger.close()
    return track


def unrelated_to(scores: Sequence[float], values: Sequence[int]) -> list[int]:
    """The values shuffled until they say nothing of the scores (|Spearman| < 0.05)."""
    for seed in range(200):
        shuffled = np.random.default_rng(seed).permutation(np.array(values))
        if abs(float(spearman(np.array([scores], float), shuffled[None, :].astype(float))[0])) < 0.05:
            return [int(v) for v in shuffled]
    raise AssertionError("precondition not reached: no shuffle of the likes within 200 tries is unrelated to scores")


def _candidate(name: str, sha: str | None) -> Candidate:
    return Candidate(Path("/history") / name, name, sha, 200_000, 1)


def _scored_entry(name: str, rng: random.Random, when: float, thumb: bytes | None) -> Entry:
    sha = hashlib.sha256(name.encode()).hexdigest()
    weights = [rng.random() ** 2 for _ in CLASSES]
    probs = tuple(w / sum(weights) for w in weights)
    s = Scored(name, f"/history/{name}", sha, CLASSES, probs, 1080, 1350, "JPEG", 200_000, when, when, thumb)
    return Entry(_candidate(name, sha), "scored", scored=s)
