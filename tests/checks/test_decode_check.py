"""The per-model decode check: the DCT scale cap, probing, the finding's rules and its keeping."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import re
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from openpyxl import load_workbook
from PIL import Image

from scorer.checks.calibration import calibration_jpeg, calibration_sizes
from scorer.checks.decode_check import (
    MEAN_DP_LIMIT,
    PROBE_CREATIVES,
    DecodeCheck,
    DecodeFinding,
    ScaleFigures,
    load_or_measure_decode_check,
)
from scorer.config import load_settings
from scorer.decoding.decode import ItemGeometry, decode_bytes, decode_file
from scorer.decoding.vet import ImageLimits
from scorer.report.workbook import ReportContent, build_workbook
from scorer.results import BatchResult
from scorer.scoring.assembly import open_engine
from scorer.scoring.engine import Engine, Item
from scorer.settings import Settings
from tests.support.imagegen import CLASS_COLOURS, creative, striped, write_creative
from tests.support.learners import build_learner, colour_design, detail_design

CROP = ItemGeometry("crop", (224, 224))


def _jpeg(size: tuple[int, int]) -> bytes:
    return calibration_jpeg(size, (150, 150), seed=1)


@pytest.mark.parametrize(("max_scale", "drafted"), [(8, (1000, 750)), (4, (1000, 750)), (2, (2000, 1500)),
                                                     (1, (4000, 3000))])
def test_max_scale_caps_the_dct_scale_pillow_picks(max_scale: int, drafted: tuple[int, int]) -> None:
    im = Image.open(io.BytesIO(_jpeg((4000, 3000))))
    request = dataclasses.replace(CROP, max_scale=max_scale).draft_request(4000, 3000)
    if request is not None:
        im.draft("RGB", request)
    assert im.size == drafted


def test_probe_scores_the_full_decode_and_drafts_beside_it(tmp_path: Path) -> None:
    data = _jpeg((2000, 1500))
    probed = decode_bytes(data, 0.0, dataclasses.replace(CROP, probe=True), ImageLimits(), 0)
    exact = decode_bytes(data, 0.0, dataclasses.replace(CROP, max_scale=1), ImageLimits(), 0)
    fast = decode_bytes(data, 0.0, CROP, ImageLimits(), 0)
    assert probed.probe is not None and probed.probe[0] == 2
    assert probed.pixels is not None and exact.pixels is not None and fast.pixels is not None
    assert np.array_equal(probed.pixels, exact.pixels)
    assert np.array_equal(probed.probe[1], fast.pixels)
    assert not np.array_equal(exact.pixels, fast.pixels)  # else the check would measure nothing
    png = write_creative(tmp_path / "a.png", (10, 200, 30), size=(2000, 1500))
    assert decode_file(png, dataclasses.replace(CROP, probe=True), ImageLimits(), 0).probe is None


SMALL = [ItemGeometry("crop", (32, 32)), ItemGeometry("squish", (30, 40)), ItemGeometry("center", (32, 32), (40, 40))]


@pytest.mark.parametrize(("geometry", "scale"), [(g, s) for g in SMALL for s in (2, 4, 8)] + [(CROP, 2), (CROP, 4)])
def test_calibration_images_are_drafted_at_the_scale_they_stand_for(geometry: ItemGeometry, scale: int) -> None:
    for size in calibration_sizes(geometry, scale):
        im = Image.open(io.BytesIO(_jpeg(size)))
        im.draft("RGB", geometry.draft_size)
        assert round(size[0] / im.size[0]) == scale


def _figures(diff: float, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    exact = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    drafted = exact + np.array([[-diff, 0.0, diff], [diff, 0.0, -diff]])
    if flip:
        drafted[0] = [0.2, 0.5, 0.3]
    return exact, drafted


@pytest.mark.parametrize(("moves", "expected"), [
    ({2: (0.0005, False), 4: (0.001, False), 8: (0.001, False)}, 8),
    ({2: (0.0005, False), 4: (0.001, False), 8: (0.01, False)}, 4),  # 1/8 moves the mean too far
    ({2: (0.0005, False), 4: (0.0, True), 8: (0.0, False)}, 2),  # one flip at 1/4 rules out 1/4 and 1/8
    ({2: (0.004, False), 4: (0.0, False), 8: (0.0, False)}, 1),  # 1/2 fails: full-size decoding
    ({2: (0.0005, False), 4: (0.0005, False)}, 4),  # 1/8 never measured: not used
])
def test_a_scale_is_used_only_where_it_and_every_finer_one_pass(moves: dict[int, tuple[float, bool]],
                                                               expected: int) -> None:
    finding = DecodeFinding("ab" * 32)
    for scale, (diff, flip) in moves.items():
        finding.scales[scale].add(*_figures(diff, flip))
    assert finding.max_scale == expected
    back = DecodeFinding.from_json(json.loads(json.dumps(finding.to_json())))
    assert back.max_scale == expected and back.scales == finding.scales


def test_the_limit_is_on_the_mean_over_every_image_and_class() -> None:
    finding = DecodeFinding("ab" * 32)
    for scale in (2, 4, 8):
        finding.scales[scale].add(*_figures(1.2 * MEAN_DP_LIMIT, False))  # mean 2/3 of that: within
    assert finding.max_scale == 8
    finding.scales[2].add(*_figures(6 * MEAN_DP_LIMIT, False))
    assert finding.scales[2].mean_abs_dp > MEAN_DP_LIMIT and finding.max_scale == 1


def _never(pixels: np.ndarray) -> np.ndarray:
    raise AssertionError("no calibration was expected")


@pytest.mark.parametrize(("mode", "max_scale"), [("exact", 1), ("fast", 8)])
def test_configured_modes_skip_the_check(tmp_path: Path, mode: str, max_scale: int) -> None:
    check = load_or_measure_decode_check(CROP, mode, "ab" * 32, tmp_path, _never)
    assert check.geometry().max_scale == max_scale and not check.geometry().probe
    assert not (tmp_path / "decode").exists()
    assert check.describe().startswith(mode)


@pytest.mark.parametrize(("full_s", "draft_s", "said"), [(3.0, 1.0, "decoding 3.0× faster"),
                                                        (1.0, 2.0, "decoding 2.0× slower"),
                                                        (1.0, 1.01, "decoding as fast")])
def test_drafting_that_costs_time_is_called_slower(full_s: float, draft_s: float, said: str) -> None:
    figures = ScaleFigures(images=2, values=6, full_s=full_s, draft_s=draft_s)
    assert figures.describe(2).endswith(f"on 2 images, {said}")


def test_probation_decodes_at_full_size_until_enough_creatives_were_checked(tmp_path: Path) -> None:
    geometry = ItemGeometry("crop", (32, 32))
    predict = _colour_model
    check = load_or_measure_decode_check(geometry, "auto", "cd" * 32, tmp_path, predict)
    assert check.finding is not None and check.finding.max_scale == 8  # calibration alone allows 1/8
    assert check.geometry().probe and check.geometry().max_scale == 1
    # what drafting saves on this machine is measured on the same calibration images, and stated
    assert all(f.full_s > 0 and f.draft_s > 0 for f in check.finding.scales.values())
    assert len(re.findall(r"decoding [0-9.]+× (faster|slower)|decoding as fast", check.describe())) == 3
    pixels = np.full((PROBE_CREATIVES, 32, 32, 3), 128, np.uint8)
    exact = predict(pixels)
    before = check.describe()
    check.observe(exact[:4], [(2, p) for p in pixels[:4]])
    assert check.geometry().probe and check.describe() != before and "(4 of 16)" in check.describe()
    shifted = pixels + 3  # drafting moved every pixel: too far for this model
    check.observe(exact[4:], [(2, p) for p in shifted[4:]])
    assert check.finding.final and check.finding.max_scale == 1
    assert check.geometry() == dataclasses.replace(geometry, max_scale=1)
    kept = json.loads((tmp_path / "decode" / f"{'cd' * 32}.json").read_text())
    assert kept["max_scale"] == 1 and kept["creatives"] == PROBE_CREATIVES
    assert kept["scales"]["8"]["full_s"] > 0
    again = load_or_measure_decode_check(geometry, "auto", "cd" * 32, tmp_path, _never)  # kept: no calibration
    assert again.geometry().max_scale == 1 and "full-size decoding" in again.describe()


def test_an_unreadable_or_foreign_record_is_measured_again(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = tmp_path / "decode" / f"{'cd' * 32}.json"
    store.parent.mkdir()
    store.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        check = load_or_measure_decode_check(ItemGeometry("crop", (32, 32)), "auto", "cd" * 32, tmp_path, _colour_model)
    assert "unreadable" in caplog.text and check.finding is not None and check.finding.calibration_images == 6
    assert json.loads(store.read_text())["sha256"] == "cd" * 32


def _colour_model(pixels: np.ndarray) -> np.ndarray:
    """A stand-in classifier whose answer follows mean brightness steeply, so a 3-level shift moves it."""
    x = pixels.reshape(len(pixels), -1).mean(1) / 255.0
    logits = np.stack([np.zeros_like(x), 4 * (x - 0.5), 8 * (x - 0.5)], 1)
    e = np.exp(logits - logits.max(1, keepdims=True))
    out: np.ndarray = e / e.sum(1, keepdims=True)
    return out


def test_a_check_without_a_finding_drafts_as_before() -> None:
    check = DecodeCheck(ItemGeometry("crop", (32, 32)), "auto")
    assert check.geometry().max_scale == 8 and check.finding is None  # an engine without a check drafts


def _settings(model: Path, root: Path, mode: str = "auto") -> Settings:
    settings = load_settings(None, model=model, state=root / "state", outbox=root)
    return dataclasses.replace(settings, classes=("Low", "Neutral", "High"),
                               images=dataclasses.replace(settings.images, decode=mode))


def _score(settings: Settings, files: list[Path]) -> tuple[Engine, dict[str, tuple[float, ...]]]:
    engine = open_engine(settings)
    try:
        result = engine.score([Item(f, f.name) for f in files])
    finally:
        engine.close()
    assert len(result.scored) == len(files)
    return engine, {s.location: s.probs for s in result.scored}


def _get_preds(model: Path, files: list[Path]) -> np.ndarray:
    from fastai.vision.all import load_learner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = load_learner(model)
        probs, _ = learn.get_preds(dl=learn.dls.test_dl(files, bs=8, num_workers=0))
    vocab = list(learn.dls.vocab)
    return probs.numpy()[:, [vocab.index(c) for c in ("Low", "Neutral", "High")]]


def _write(folder: Path, make: Callable[..., Image.Image], sizes: list[tuple[int, int]], count: int,
           seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    colours = list(CLASS_COLOURS.values())
    files = []
    for i in range(count):
        # between two classes' colours: answers near a tie, where a small change in the pixels shows
        mixed = tuple((a + b) // 2 for a, b in zip(colours[i % 3], colours[(i + 1) % 3], strict=True))
        colour = mixed if make is striped else colours[i % 3]
        path = folder / f"c{seed + i}.jpg"
        make(colour, sizes[i % len(sizes)], seed + i).save(path, quality=90)
        files.append(path)
    return files


@pytest.fixture(scope="module")
def sensitive_learner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Plain fastai: a resnet18 whose answers follow fine detail, which drafting renders differently; built so
    (tests/support/learners.py), since what a briefly trained one learns changes with the CPU's kernels."""
    return build_learner(tmp_path_factory.mktemp("sensitive") / "sensitive.pkl", detail_design())


@pytest.mark.slow
def test_sensitive_learner_falls_back_to_full_decoding_with_fastai_parity(
    tmp_path: Path, sensitive_learner: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(sensitive_learner, tmp_path)
    # 160×130 is drafted at 1/2 down to 80×65, close to the 64×64 floor: where drafting shows most
    first = _write(tmp_path / "first", striped, [(160, 130)], PROBE_CREATIVES + 2, 0)
    engine, _ = _score(settings, first)
    assert isinstance(engine.check, DecodeCheck) and engine.check.finding is not None
    finding = engine.check.finding
    assert finding.final and finding.max_scale == 1, finding.describe()
    half = finding.scales[2]
    assert half.mean_abs_dp > MEAN_DP_LIMIT or half.flips > 0
    assert engine.info.decode.startswith("auto: full-size decoding")
    later = _write(tmp_path / "later", striped, [(200, 150), (400, 300), (800, 600)], 9, 100)
    caplog.clear()  # only what the second engine logs
    with caplog.at_level(logging.INFO):
        engine, got = _score(settings, later)
    assert "kept in" in caplog.text and "measured in" not in caplog.text  # the check ran once
    ours = np.array([got[str(f)] for f in later])
    assert np.abs(ours - _get_preds(sensitive_learner, later)).max() <= 1e-4


@pytest.fixture(scope="module")
def robust_learner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Plain fastai: a resnet18 that answers by mean colour with logit margins of 12 and more
    (tests/support/learners.py), on its colours and on photo-like images alike, so drafting cannot move
    its answers."""
    return build_learner(tmp_path_factory.mktemp("robust") / "robust.pkl", colour_design())


@pytest.mark.slow
def test_robust_learner_keeps_draft_decoding_and_another_model_gets_its_own_finding(
    tmp_path: Path, robust_learner: Path, sensitive_learner: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = _write(tmp_path / "in", creative, [(200, 150), (400, 300), (800, 600)], PROBE_CREATIVES + 2, 0)
    settings = _settings(robust_learner, tmp_path)
    engine, got = _score(settings, files)
    assert isinstance(engine.check, DecodeCheck) and engine.check.finding is not None
    assert engine.check.finding.final and engine.check.finding.max_scale == 8, engine.check.finding.describe()
    assert engine.check.geometry().max_scale == 8 and not engine.check.geometry().probe
    ours, ref = np.array([got[str(f)] for f in files]), _get_preds(robust_learner, files)
    assert (ours.argmax(1) == ref.argmax(1)).all() and np.abs(ours - ref).mean() <= 0.01
    book = io.BytesIO()
    build_workbook(ReportContent(BatchResult(), engine.info, settings.report), datetime.now()).save(book)
    sheet = dict(load_workbook(book)["Model"].iter_rows(min_row=2, values_only=True))
    assert str(sheet["Decoding"]).startswith("auto: JPEG draft decoding down to 1/8")
    assert str(sheet["ONNX export check"]).startswith("max |logit diff| ONNX Runtime vs PyTorch")
    robust = tmp_path / "state" / "decode" / f"{engine.info.sha256}.json"
    kept = robust.read_bytes()
    caplog.clear()  # only what the second engine logs
    with caplog.at_level(logging.INFO):
        other = open_engine(_settings(sensitive_learner, tmp_path))
        other.close()
    assert "measured in" in caplog.text  # not the robust learner's finding
    assert isinstance(other.check, DecodeCheck) and other.check.finding is not None
    assert other.check.finding.sha256 == other.info.sha256 != engine.info.sha256
    assert sorted(p.name for p in robust.parent.iterdir()) == sorted(
        f"{sha}.json" for sha in (engine.info.sha256, other.info.sha256))
    assert robust.read_bytes() == kept
