"""Opening a learner: from its fast start and pinned export without fastai or PyTorch, with the same answers,
or through fastai when the run may draw Grad-CAM or the fast start or export does not hold; and the precision
that the one `precision` key asks for."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from scorer.config import load_settings
from scorer.errors import ConfigError
from scorer.model.fast_start import fast_start_path
from scorer.scoring.classifier import Classifier
from tests.support.helpers import ROOT, Project, invoke_scorer
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
    return classifier.export_check.count("recorded") == 1 and classifier.torch_model is None


def test_a_run_that_may_draw_grad_cam_opens_the_learner_itself(project: Project) -> None:
    _first_start(project)  # with report.explain: never
    assert _opened_from_record(project, explain=True)
    project.write_config("model: models/tiny.pkl\n")  # report.explain: auto
    assert _opened_from_record(project, explain=False)  # a run too large for overlays
    classifier = Classifier(load_settings(project.config))
    assert "recorded" not in classifier.export_check and classifier.torch_model is not None


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
        expected = "has changed since it was pinned (sha256"
    with caplog.at_level(logging.INFO):
        assert not _opened_from_record(project)
    assert expected in caplog.text
    # the learner's own start checked the export against PyTorch again and wrote a fast start that holds
    assert _opened_from_record(project)


def test_half_precision_is_refused_on_the_cpu_with_the_precision_to_use(project: Project) -> None:
    project.write_config("model: models/tiny.pkl\ndevice: cpu\nprecision: fp16\n")
    said = ("'precision: fp16' is half precision on CUDA, and this run is on the CPU (device: cpu): set 'precision: "
            "auto' (int8 where the precision check allows it, else fp32) or 'precision: fp32'")
    with pytest.raises(ConfigError) as refused:
        Classifier(load_settings(project.config))
    assert str(refused.value) == said
    write_creative(project.inbox / "a.png", CLASS_COLOURS["High"])
    result = invoke_scorer("score", str(project.inbox), "--config", str(project.config))
    assert (result.exit_code, result.output) == (2, f"error: {said}\n")
    assert project.reports() == []


@pytest.mark.parametrize(("precision", "said"), [("auto", "fp32 (PyTorch)"), ("fp32", "fp32 (PyTorch)")])
def test_the_model_sheet_names_the_precision_of_a_pytorch_run(project: Project, precision: str, said: str) -> None:
    from scorer.scoring.assembly import describe_model

    project.write_config(f"model: models/tiny.pkl\nruntime: torch\nprecision: {precision}\n")
    settings = load_settings(project.config)
    classifier = Classifier(settings)
    info = describe_model(classifier, settings)
    assert (info.runtime, info.precision) == ("torch-cpu", said)
    assert classifier.check_precision(settings, lambda: True) is None, "no int8 copy of a PyTorch run"
