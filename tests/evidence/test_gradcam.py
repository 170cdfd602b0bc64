"""Where the model looked: Grad-CAM on a learner for which only a small patch carries the class colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from openpyxl import load_workbook
from PIL import Image

from scorer.cli import main
from scorer.config import load_settings
from scorer.evidence.gradcam import Explainer
from scorer.report.evidence_columns import LOOKED
from scorer.scoring.classifier import Classifier
from tests.support.learners import build_learner, patch_design

SIZE, PATCH = 128, 40
COLOURS = {"Low": (30, 60, 220), "Neutral": (30, 200, 60), "High": (230, 40, 30)}


def patch_image(colour: tuple[int, int, int], seed: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Grey noise with one PATCH×PATCH square of the class colour somewhere; returns pixels and its corner."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(100, 156, (SIZE, SIZE, 3)).astype(np.uint8)
    x, y = (int(v) for v in rng.integers(0, SIZE - PATCH, 2))
    pixels[y:y + PATCH, x:x + PATCH] = colour
    return pixels, (x, y)


def patch_mask(corner: tuple[int, int]) -> np.ndarray:
    mask = np.zeros((SIZE, SIZE), bool)
    mask[corner[1]:corner[1] + PATCH, corner[0]:corner[0] + PATCH] = True
    return mask


@pytest.fixture(scope="session")
def patch_learner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Plain fastai: a resnet18 that tells the classes only by a small coloured patch; built so
    (tests/support/learners.py), since what a briefly trained one learns changes with the CPU's kernels."""
    return build_learner(tmp_path_factory.mktemp("patch") / "patch.pkl", patch_design(), size=SIZE)


@pytest.fixture(scope="module")
def patch_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state folder for these tests: the patch learner's export and checks are made once, not per test."""
    return tmp_path_factory.mktemp("patch-state")


@pytest.mark.slow
def test_gradcam_hot_region_overlaps_the_patch(patch_learner: Path, patch_state: Path) -> None:
    settings = load_settings(None, model=patch_learner)
    settings = type(settings)(**{**settings.__dict__, "state": patch_state, "threads": 1})
    classifier = Classifier(settings)
    assert classifier.torch_model is not None  # kept for Grad-CAM although ONNX runs the forward pass
    explainer = Explainer(classifier.torch_model, classifier.prepare, 1, 96)
    images = [patch_image(colour, 5000 + 10 * j + k) for j in range(3) for k, colour in enumerate(COLOURS.values())]
    pixels = np.stack([p for p, _ in images])
    probs = classifier.predict_with_embedding(pixels)[0]
    assert [classifier.classes[i] for i in probs.argmax(axis=1)] == ["Low", "Neutral", "High"] * 3
    heat = explainer.heatmaps(pixels)
    assert heat.shape == (9, SIZE, SIZE)
    # A model may tell one class by the absence of the others' colours; its prediction then does not rest on
    # the patch, and no faithful map can point there. Which predictions rest on the patch: hide it under the
    # background's noise and see whether the prediction goes.
    hidden = pixels.copy()
    noise = np.random.default_rng(1).integers(100, 156, (SIZE, SIZE, 3)).astype(np.uint8)
    for image, (_, corner) in zip(hidden, images, strict=True):
        image[patch_mask(corner)] = noise[patch_mask(corner)]
    predicted = probs.argmax(axis=1)
    after = classifier.predict_with_embedding(hidden)[0][np.arange(len(images)), predicted]
    rests = after < probs[np.arange(len(images)), predicted] - 0.5
    ious = []
    for h, (_, corner) in zip(heat, images, strict=True):
        hot = h >= 0.5 * h.max()  # the hot region: at least half the map's peak
        mask = patch_mask(corner)
        ious.append(float((hot & mask).sum() / (hot | mask).sum()))
    resting = [iou for iou, r in zip(ious, rests, strict=True) if r]
    assert len({k % 3 for k in np.flatnonzero(rests)}) >= 2, (rests, ious)  # at least two classes rest on it
    assert min(resting) >= 0.5, (rests, ious)  # each of those maps covers its patch, wherever the patch is
    overlays = explainer.overlays(pixels[:3])
    assert all(Image.open(__import__("io").BytesIO(o)).size == (96, 96) for o in overlays)


@pytest.mark.slow
@pytest.mark.parametrize(("explain", "expected"), [("always", True), ("auto", False), ("never", False)])
def test_overlays_go_into_the_report_as_explain_says(tmp_path: Path, patch_learner: Path, patch_state: Path,
                                                     explain: str, expected: bool) -> None:
    (tmp_path / "outbox").mkdir()
    config = tmp_path / "config.yaml"
    # auto with a bound of 2 creatives: a batch of 3 gets no overlays
    config.write_text(f"model: {patch_learner}\nstate: {patch_state}\nthreads: 1\n"
                      f"report:\n  explain: {explain}\n  explain_max: 2\n")
    inputs = tmp_path / "in"
    inputs.mkdir()
    for k, colour in enumerate(COLOURS.values()):
        Image.fromarray(patch_image(colour, 7000 + k)[0]).save(inputs / f"c{k}.png")
    result = CliRunner().invoke(main, ["score", str(inputs), "--config", str(config)])
    assert result.exit_code == 0, result.output
    (report,) = (tmp_path / "outbox").glob("*.xlsx")
    book = load_workbook(report)
    header = [c.value for c in book["Ranking"][1]]
    assert (LOOKED in header) is expected
    assert len(book["Ranking"]._images) == 3 * (2 if expected else 1)
    model = dict(book["Model"].iter_rows(min_row=2, values_only=True))
    assert model["Where the model looked"].startswith("never" if explain == "never" else "Grad-CAM")


@pytest.mark.slow
@pytest.mark.parametrize(("largest", "kept"), [(2, True), (3, False), (None, True)])
def test_a_run_too_large_for_overlays_does_not_keep_the_pytorch_copy(tmp_path: Path, patch_learner: Path,
                                                                      patch_state: Path, largest: int | None,
                                                                      kept: bool) -> None:
    from scorer.scoring.assembly import open_engine

    config = tmp_path / "config.yaml"
    config.write_text(f"model: {patch_learner}\nstate: {patch_state}\nthreads: 1\n"
                      "report:\n  explain: auto\n  explain_max: 2\n")
    engine = open_engine(load_settings(config), largest_batch=largest)
    try:
        assert (engine.model.torch_model is not None) is kept  # ONNX scores; PyTorch stays only for Grad-CAM
        assert (engine.enrichment.explainer is not None) is kept
        assert engine.info.explain == "Grad-CAM for the predicted class, for batches of at most 2 creatives"
    finally:
        engine.close()
