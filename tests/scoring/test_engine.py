"""The engine with the fake colour classifier (the model is not under test here): ranking, rejection,
duplicates, batching, stopping, the embedding of the same call, and the decode check's mode on the report."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from scorer.checks.decode_check import PROBE_CREATIVES, load_or_measure_decode_check
from scorer.report.workbook import ReportContent, save_report
from scorer.results import BatchResult, Scored
from scorer.scoring.engine import Engine, Item
from tests.support.fakes import CLASSES, COLOUR_INFO, ColourModel, colour_engine
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.workbooks import column


def _items(folder: Path, colours: list[str], suffix: str = ".png", size: tuple[int, int] = (48, 40)) -> list[Item]:
    return [Item(write_creative(folder / f"{i:02d}-{name}{suffix}", CLASS_COLOURS[name], size, seed=i),
                 f"{i:02d}-{name}") for i, name in enumerate(colours)]


@pytest.fixture
def fresh() -> Iterator[Engine]:
    """An engine of its own, for tests that look at what its model was asked."""
    engine = colour_engine()
    yield engine
    engine.close()


def test_creatives_are_ranked_by_engagement_score_lowest_class_first(engine: Engine, tmp_path: Path) -> None:
    result = engine.score(_items(tmp_path, ["Low", "High", "Neutral"]))
    assert [s.predicted for s in result.ranked()] == ["High", "Neutral", "Low"]
    assert [s.name for s in result.ranked()] == ["01-High", "02-Neutral", "00-Low"]
    for scored in result.scored:
        assert scored.classes == CLASSES and sum(scored.probs) == pytest.approx(1)
        assert scored.thumbnail is not None and scored.sha256 and (scored.width, scored.height) == (48, 40)
    assert not result.rejected and not result.duplicates


def test_a_file_that_cannot_be_decoded_is_rejected_with_its_reason_and_the_others_are_scored(
        engine: Engine, tmp_path: Path) -> None:
    good = _items(tmp_path, ["High"])
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 then nothing a decoder can use")
    gone = tmp_path / "gone.png"  # listed, then removed before it is read
    result = engine.score([*good, Item(tmp_path / "broken.jpg", "broken"), Item(gone, "gone")])
    assert [s.name for s in result.scored] == ["00-High"]
    reasons = {r.name: (r.reason, r.transient) for r in result.rejected}
    assert reasons == {"broken": ("file is incomplete or corrupt", False),
                       "gone": ("file disappeared before it could be read", True)}


def test_content_seen_before_or_twice_is_a_duplicate_and_not_scored_again(fresh: Engine, tmp_path: Path) -> None:
    first, second = _items(tmp_path, ["High", "Low"])
    copy = tmp_path / "copy.png"
    copy.write_bytes(first.path.read_bytes())
    result = fresh.score([first, Item(copy, "copy")])
    (scored,) = result.scored
    (duplicate,) = result.duplicates
    assert (duplicate.name, duplicate.original) == ("copy", scored)

    earlier: dict[str, Scored] = {scored.sha256: scored}  # what the ledger holds, for the watch service
    model = fresh.model
    assert isinstance(model, ColourModel)
    asked = len(model.batches)
    again = fresh.score([first, second], known=earlier.get)
    assert [d.original for d in again.duplicates] == [scored] and [s.name for s in again.scored] == ["01-Low"]
    assert model.batches[asked:] == [1], "only the new content went to the model"


def test_creatives_go_to_the_model_in_batches_of_its_size_and_progress_counts_each(
        fresh: Engine, tmp_path: Path) -> None:
    items = _items(tmp_path, ["High", "Neutral", "Low", "High"] * 5)
    told: list[int] = []
    result = fresh.score(items, progress=told.append)
    assert isinstance(fresh.model, ColourModel)
    assert fresh.model.batches == [8, 8, 4]
    assert sum(told) == len(result.scored) == 20


def test_a_stop_abandons_the_batch_with_what_was_decided(fresh: Engine, tmp_path: Path) -> None:
    items = _items(tmp_path, ["High", "Low"] * 12)
    told: list[int] = []
    partial = fresh.score(items, progress=told.append, stop=lambda: sum(told) >= 8)
    assert 8 <= len(partial.scored) == sum(told) < len(items) and not partial.rejected and not partial.duplicates
    assert isinstance(fresh.model, ColourModel) and len(fresh.model.batches) == len(partial.scored) // 8


@pytest.mark.parametrize("embeds", [True, False])
def test_the_embedding_comes_from_the_call_that_gave_the_probabilities(tmp_path: Path, embeds: bool) -> None:
    model = ColourModel()
    model.embeds = embeds
    engine = colour_engine(model)
    try:
        (scored,) = engine.score(_items(tmp_path, ["Neutral"])).scored
    finally:
        engine.close()
    assert model.batches == [1], "one forward pass"
    if not embeds:
        assert scored.embedding is None
        return
    assert scored.embedding is not None
    embedding = np.frombuffer(scored.embedding, np.float16)
    assert embedding.shape == (3,) and embedding.argmax() == 1  # the fake's embedding: its mean colour, green


def test_the_report_shows_the_decode_check_as_it_stands_while_the_engine_was_opened_once(tmp_path: Path) -> None:
    model = ColourModel()
    check = load_or_measure_decode_check(ColourModel.geometry, "auto", COLOUR_INFO.sha256, tmp_path / "state",
                                         lambda pixels: model.predict_with_embedding(pixels)[0])
    opened = dataclasses.replace(COLOUR_INFO, decode=check.describe())  # as scoring.assembly opens an engine
    assert opened.decode.startswith("auto: full-size decoding while the first creatives are checked (0 of 16)")
    engine = colour_engine(model, opened, check=check)
    try:
        # large JPEGs: drafted beside their full decode while the check is on probation
        engine.score(_items(tmp_path / "in", ["High", "Low"] * (PROBE_CREATIVES // 2), ".jpg", (400, 300)))
        info = engine.info
    finally:
        engine.close()
    assert engine.opened is opened and opened.decode.endswith("0 creatives). A scale needs mean |Δp| ≤ 0.002 and "
                                                               "no flips"), "the ModelInfo opened is never rewritten"
    assert info.decode == check.describe() and info.decode.startswith("auto: JPEG draft decoding down to 1/")
    assert f"{PROBE_CREATIVES} creatives" in info.decode
    report = save_report(tmp_path / "report.xlsx", ReportContent(BatchResult(), info))
    rows = dict(zip(column(report, "Model", "Item"), column(report, "Model", "Value"), strict=True))
    assert rows["Decoding"] == info.decode
