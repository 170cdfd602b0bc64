"""The fast start: a learner opened once is opened again from its pinned export without fastai or PyTorch,
gives the same answers, and a fast start or an export that does not hold sends the start back to the learner."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scorer.config import load_settings
from scorer.model.fast_start import Preprocessing, fast_start_path, read_fast_start, softmax
from scorer.scoring.classifier import Classifier
from tests.support.helpers import ROOT, Project
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.workbooks import column

# `scorer ARGS`, then which of fastai and torch the process imported, on stderr's last line.
SCRIPT = """
import sys
from scorer.cli import run
try:
    run()
finally:
    print("imported:" + ",".join(m for m in ("fastai", "torch") if m in sys.modules), file=sys.stderr)
"""


def _score(project: Project, out: Path) -> tuple[str, str]:
    args = [sys.executable, "-c", SCRIPT, "score", str(project.inbox), "--config", str(project.config),
            "--out", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr.strip().splitlines()[-1], proc.stderr


@pytest.mark.slow
def test_a_second_start_opens_the_export_without_fastai_or_torch_and_answers_alike(project: Project,
                                                                                     tmp_path: Path) -> None:
    for i, colour in enumerate([*CLASS_COLOURS.values(), (120, 110, 100)]):
        write_creative(project.inbox / f"c{i}.png", colour, (80, 60), seed=i)
    project.write_config("model: models/tiny.pkl\nreport:\n  explain: never\n")
    first, log = _score(project, tmp_path / "first")
    assert first == "imported:fastai,torch" and "from its fast start" not in log
    sha = json.loads((project.root / "state/model-pins.json").read_text()).popitem()[1]
    assert fast_start_path(project.root / "state", sha).is_file()

    second, log = _score(project, tmp_path / "second")
    assert second == "imported:", log  # neither fastai nor PyTorch
    assert re.search(r"model \S+ loaded in [\d.]+ s from its fast start: classes", log), log
    (a,), (b,) = (list((tmp_path / name).glob("*.xlsx")) for name in ("first", "second"))
    for name in ("File", "Predicted class", "Confidence", "Engagement score"):
        assert column(a, "Ranking", name) == column(b, "Ranking", name)
    assert "PyTorch's recorded logits" in str(column(b, "Model", "Value"))


def _first_start(project: Project) -> Path:
    project.write_config("model: models/tiny.pkl\nreport:\n  explain: never\n")
    Classifier(load_settings(project.config))
    (fast_start,) = (project.root / "state/fast-start").iterdir()
    return fast_start


def _opened_from_record(project: Project, explain: bool = False) -> bool:
    classifier = Classifier(load_settings(project.config), explain=explain)
    return classifier.info.export_check.count("recorded") == 1 and classifier.torch_model is None


def test_a_run_that_may_draw_grad_cam_opens_the_learner_itself(project: Project) -> None:
    _first_start(project)  # with report.explain: never
    assert _opened_from_record(project, explain=True)
    project.write_config("model: models/tiny.pkl\n")  # report.explain: auto
    assert _opened_from_record(project, explain=False)  # a run too large for overlays
    classifier = Classifier(load_settings(project.config))
    assert "recorded" not in classifier.info.export_check and classifier.torch_model is not None


@pytest.mark.parametrize("damage", ["unreadable", "wrong-logits", "other-export"])
def test_a_record_or_export_that_does_not_hold_sends_the_start_to_the_learner(
        project: Project, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    fast_start = _first_start(project)
    assert _opened_from_record(project)
    data = json.loads(fast_start.read_text())
    if damage == "unreadable":
        fast_start.write_text(fast_start.read_text()[:40])
        expected = "is damaged"
    elif damage == "wrong-logits":
        data["sample_logits"] = [[v + 0.5 for v in row] for row in data["sample_logits"]]
        fast_start.write_text(json.dumps(data))
        expected = "differs from PyTorch's recorded answers"
    else:  # an export that is not the recorded one, pinned in its place
        pins = project.root / "state/derived-pins.json"
        pins.write_text(pins.read_text().replace(data["onnx_sha256"], "0" * 64))
        expected = "does not match its pin"
    with caplog.at_level(logging.INFO):
        assert not _opened_from_record(project)
    assert expected in caplog.text
    # the learner's own start checked the export against PyTorch again and wrote a fast start that holds
    assert _opened_from_record(project)


def test_numpy_prepares_batches_as_fastai_does_with_normalize_and_refuses_other_transforms(tiny_learner: Path) -> None:
    from fastai.vision.all import Brightness, Normalize, Transform, imagenet_stats

    from scorer.model.learner import batch_transform, is_softmax, load, plain_preprocessing

    learn = load(tiny_learner, tiny_learner.read_bytes())
    pixels = np.random.default_rng(1).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    plain = plain_preprocessing(learn, pixels)
    assert plain == Preprocessing(255.0)
    assert is_softmax(learn)
    logits = np.array([[1.0, 2.0, 3.0], [-50.0, 0.0, 50.0]], dtype=np.float32)
    assert np.allclose(softmax(logits).sum(axis=1), 1) and softmax(logits).argmax(axis=1).tolist() == [2, 2]

    pipeline = learn.dls.valid.after_batch
    pipeline.add(Normalize.from_stats(*imagenet_stats))  # as a pretrained learner normalises
    pipeline.add(Brightness(p=1.0))  # an augmentation: training only, so not part of scoring
    plain = plain_preprocessing(learn, pixels)
    assert plain is not None and plain.mean is not None and plain.std is not None
    assert np.array_equal(plain.apply(pixels), batch_transform(learn)(pixels))

    class Invert(Transform):  # a transform the fast start cannot describe
        order = 100

        def encodes(self, x: object) -> object:
            return 1 - x  # type: ignore[operator]

    pipeline.add(Invert())
    assert plain_preprocessing(learn, pixels) is None


def test_a_record_is_read_back_whole_or_not_at_all(tmp_path: Path) -> None:
    assert read_fast_start(tmp_path, "ab" * 32) is None
    path = fast_start_path(tmp_path, "ab" * 32)
    path.parent.mkdir(parents=True)
    for text in ("{", "[]", '{"version": 1}', '{"version": 99, "vocab": ["a", "b"]}'):
        path.write_text(text)
        assert read_fast_start(tmp_path, "ab" * 32) is None
