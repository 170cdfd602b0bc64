"""Loading any exported learner, and matching fastai's own predictions."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from scorer.config import load_settings
from scorer.scoring.assembly import open_engine
from scorer.scoring.engine import Item
from tests.support.helpers import Project
from tests.support.imagegen import CLASS_COLOURS, labelled_set, write_creative
from tests.support.learners import colour_design, set_design


def _build(folder: Path, out: Path, item_tfms: object, batch_tfms: object = None,
           label_module: str | None = None) -> Path:
    from fastai.vision.all import (
        CategoryBlock,
        DataBlock,
        ImageBlock,
        RandomSplitter,
        resnet18,
        vision_learner,
    )

    items = labelled_set(folder, per_class=8, classes=CLASS_COLOURS, size=(90, 60))
    labels = {p.name: label for p, label in items}
    get_y = (lambda p: labels[Path(p).name]) if label_module is None else __import__(label_module).label_func
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_y=get_y, splitter=RandomSplitter(0.25, seed=0),
                          item_tfms=item_tfms, batch_tfms=batch_tfms)
        dls = block.dataloaders([p for p, _ in items], bs=8, num_workers=0)
        learn = vision_learner(dls, resnet18, pretrained=False)
        set_design(learn, colour_design())  # answers that follow the colour, on every CPU: no training needed
        learn.export(out)
    os.chmod(out, 0o644)
    return out


@pytest.fixture(scope="module")
def variant_learners(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Learners exported with other validation-time transforms than the default crop."""
    from fastai.vision.all import CropPad, Normalize, Resize, aug_transforms, imagenet_stats

    root = tmp_path_factory.mktemp("variants")
    return {
        # pad + ImageNet normalisation + augmentations that resample the batch at validation ("presizing")
        "pad-presized": _build(root / "a", root / "pad.pkl", Resize(40, method="pad", pad_mode="zeros"),
                               [*aug_transforms(size=32), Normalize.from_stats(*imagenet_stats)]),
        "squish": _build(root / "b", root / "squish.pkl", Resize((30, 40), method="squish")),
        # CropPad is not a transform the fast engine knows: fastai's own path must take over
        "unknown": _build(root / "c", root / "unknown.pkl", [Resize(48), CropPad(32)]),
    }


@pytest.fixture(scope="module")
def shared_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One state folder for the engine tests: each learner's export and checks are made once, not per runtime."""
    return tmp_path_factory.mktemp("variants-state")


def _get_preds(model: Path, files: list[Path], classes: list[str]) -> np.ndarray:
    from fastai.vision.all import load_learner

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = load_learner(model)
        probs, _ = learn.get_preds(dl=learn.dls.test_dl(files, bs=8, num_workers=0))
    vocab = list(learn.dls.vocab)
    return probs.numpy()[:, [vocab.index(c) for c in classes]]


def _mixed_files(folder: Path) -> list[Path]:
    sizes = [(640, 480), (480, 640), (1080, 1350), (300, 300), (97, 61)]
    files = []
    for i, (label, colour) in enumerate(list(CLASS_COLOURS.items()) * 3):
        size = sizes[i % len(sizes)]
        suffix = ".png" if i % 4 == 3 else ".jpg"
        files.append(write_creative(folder / f"{label}{i}{suffix}", colour, size, seed=100 + i))
    return files + _awkward_files(folder)


def _awkward_files(folder: Path) -> list[Path]:
    """Files that fastai reads in its own way: the engine must read them the same (people's view aside)."""
    from PIL import Image

    colour = next(iter(CLASS_COLOURS.values()))
    base = Image.open(write_creative(folder / "base.png", colour, (160, 120), seed=7)).convert("RGB")
    (folder / "base.png").unlink()
    rgba = base.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgba.size))  # colours under the alpha still count
    rgba.save(folder / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # a phone photo stored sideways: fastai does not turn it upright
    base.save(folder / "sideways.jpg", quality=95, exif=exif.tobytes())
    palette = base.convert("P")
    palette.save(folder / "palette.png", transparency=0)
    grey16 = Image.fromarray(np.asarray(base.convert("L"), dtype=np.uint16) * 257)
    grey16.save(folder / "grey16.png")
    return [folder / n for n in ("alpha.png", "sideways.jpg", "palette.png", "grey16.png")]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["crop", "pad-presized", "squish", "unknown"])
@pytest.mark.parametrize("runtime", ["onnx", "torch"])
def test_engine_matches_fastai_get_preds(project: Project, trained_learner: Path, variant_learners: dict[str, Path],
                                         shared_state: Path, variant: str, runtime: str,
                                         caplog: pytest.LogCaptureFixture) -> None:
    model = trained_learner if variant == "crop" else variant_learners[variant]
    settings = dataclasses.replace(load_settings(project.config, model=model), runtime=runtime, state=shared_state)
    files = _mixed_files(project.inbox)
    with caplog.at_level(logging.INFO):
        engine = open_engine(settings)
        try:
            result = engine.score([Item(f, f.name) for f in files])
        finally:
            engine.close()
    assert not result.rejected and not result.duplicates
    got = {s.location: s.probs for s in result.scored}
    ours = np.array([got[str(f)] for f in files])
    ref = _get_preds(model, files, list(engine.model.classes))
    assert (ours.argmax(1) == ref.argmax(1)).all()
    # JPEG draft decoding changes pixels slightly; anything else would be a preprocessing bug
    assert np.abs(ours - ref).mean() < 0.01
    exact = [i for i, f in enumerate(files) if f.suffix == ".png"]  # PNGs: the same pixels, whatever the mode
    assert np.abs(ours[exact] - ref[exact]).max() < 1e-4, [files[i].name for i in exact]
    assert np.allclose(ours.sum(1), 1.0, atol=1e-5)
    fallback = "is not one the fast engine knows: using fastai's own test_dl path" in caplog.text
    assert fallback == (variant == "unknown")
    if variant != "unknown":
        assert engine.info.runtime.startswith("onnxruntime" if runtime == "onnx" else "torch")


@pytest.mark.slow
def test_onnx_export_is_cached_by_learner_hash(project: Project) -> None:
    settings = load_settings(project.config)
    open_engine(settings).close()
    (onnx,) = project.models.glob("tiny.*.onnx")
    stamp = onnx.stat().st_mtime_ns
    engine = open_engine(settings)
    engine.close()
    assert onnx.stat().st_mtime_ns == stamp, "the cached ONNX export was not reused"
    onnx.write_bytes(onnx.read_bytes()[:-10] + b"0123456789")  # a damaged cache is exported again
    open_engine(settings).close()
    assert onnx.stat().st_mtime_ns != stamp


@pytest.mark.slow
def test_learner_with_unimportable_label_function_loads_and_scores(tmp_path: Path, project: Project) -> None:
    # As a notebook would: the labelling function lives in a module that the scorer cannot import.
    module_dir = tmp_path / "nbmods"
    module_dir.mkdir()
    (module_dir / "campaign_labels.py").write_text(textwrap.dedent("""
        def label_func(path):
            return str(path).rsplit("/", 1)[-1].split("_")[0]
    """))
    sys.path.insert(0, str(module_dir))
    try:
        from fastai.vision.all import Resize

        model = _build(tmp_path / "data", project.models / "nb.pkl", Resize(32), label_module="campaign_labels")
    finally:
        sys.path.remove(str(module_dir))
        sys.modules.pop("campaign_labels", None)
    write_creative(project.inbox / "a.jpg", CLASS_COLOURS["High"], (200, 150))
    project.write_config("model: models/nb.pkl\n")
    args = [sys.executable, "-m", "scorer", "score", str(project.inbox), "--config", str(project.config)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "campaign_labels.label_func" in proc.stderr  # logged as ignored: not needed for scoring
    assert len(project.reports()) == 1
    assert model.exists()
