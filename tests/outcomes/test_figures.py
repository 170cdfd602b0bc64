"""The track record per format: each format's launches get the whole's figures on their own, kept and shown."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from scorer.ledger.schema import LEDGER_NAME, TRACK_RECORD
from scorer.ledger.store import Ledger
from scorer.outcomes.figures import figures
from scorer.settings import Settings
from scorer.track_record import TrackRecord
from tests.support.history import INFO, fill_history, record_launches, unrelated_to

FORMATS = ("video", "image", "carousel")


def _record(state: Path, formats: list[str] | None = None) -> TrackRecord:
    """60 launches: the videos' likes follow the predicted score, the others' say nothing of it."""
    made = fill_history(state, 60, per_batch=20, days=20)
    formats = formats or [FORMATS[n % 3] for n in range(60)]
    following = [int(4000 + 100 * s.score) for s in made]
    others = [n for n, fmt in enumerate(formats) if fmt != "video"]
    shuffled = dict(zip(others, unrelated_to([made[n].score for n in others], [following[n] for n in others]),
                        strict=True))
    return record_launches(state, made, [shuffled.get(n, following[n]) for n in range(60)], formats=formats)


def test_each_format_gets_the_figures_of_its_own_launches(tmp_path: Path) -> None:
    track = _record(tmp_path)
    assert list(track.formats) == ["image", "video", "carousel"]
    train = Settings().train
    for fmt, record in track.formats.items():
        own = [launch for launch in track.launches if launch.format == fmt]
        alone = figures([launch for launch in own if launch.counted(track.settled)], train.label.classes,
                        train.bootstrap, train.seed)
        assert (record.matched, record.mature) == (20, 20)
        assert (record.spearman, record.accuracy, record.baseline_accuracy, record.lift) == (
            alone["spearman"], alone["accuracy"], alone["baseline_accuracy"], alone["lift"])
    video, image = track.formats["video"].spearman, track.formats["image"].spearman
    assert video.low is not None and video.low > 0, "the videos' likes follow the score"
    assert image.low is not None and image.high is not None and image.low <= 0 <= image.high
    assert track.headline["Video launches"] == track.formats["video"].line()
    assert track.headline["Video launches"].startswith("20 matched, 20 counted: Spearman 1.00 (95% CI ")
    assert list(track.headline)[-3:] == ["Image launches", "Video launches", "Carousel launches"]


def test_the_figures_per_format_are_kept_and_read_back(tmp_path: Path) -> None:
    track = _record(tmp_path)
    ledger = Ledger(tmp_path)
    try:
        kept = ledger.launches.track_record(INFO.sha256, newest=60)
    finally:
        ledger.close()
    assert kept is not None and kept.formats == track.formats and kept.headline == track.headline
    assert [launch.format for launch in kept.launches] == [launch.format for launch in track.launches]
    plain = track.as_dict()
    assert set(plain["formats"]) == set(FORMATS) and plain["formats"]["video"]["matched"] == 20
    assert set(plain["formats"]["video"]["spearman"]) == {"value", "low", "high"}
    assert [row["format"] for row in plain["pairs"]] == [launch.format for launch in track.launches]


def test_an_account_of_pictures_keeps_its_headline(tmp_path: Path) -> None:
    track = _record(tmp_path, ["image"] * 60)
    assert list(track.formats) == ["image"] and not [key for key in track.headline if "launches" in key.lower()
                                                     and key != "Launched creatives"]


def test_launches_and_a_record_kept_before_formats_read_back_by_their_creative(tmp_path: Path) -> None:
    _record(tmp_path)
    with sqlite3.connect(tmp_path / LEDGER_NAME) as db:  # as a version before formats left them
        db.execute("UPDATE outcomes SET format = NULL")
        key = TRACK_RECORD + INFO.sha256
        data = json.loads(db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()[0])
        del data["formats"]
        for row in data["pairs"]:
            del row["format"]
        db.execute("UPDATE meta SET value = ? WHERE key = ?", (json.dumps(data), key))
    ledger = Ledger(tmp_path)
    try:
        kept = ledger.launches.track_record(INFO.sha256, newest=60)
    finally:
        ledger.close()
    assert kept is not None and kept.formats == {} and "Video launches" not in kept.headline
    assert {launch.format for launch in kept.launches} == {"image"}, "the history's creatives are all stills"
