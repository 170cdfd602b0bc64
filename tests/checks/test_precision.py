"""The precision check: int8 scores a model's creatives only where it gives the model's own answers."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from scorer.checks import precision
from scorer.checks.agreement import Agreement
from scorer.checks.precision import PrecisionFinding
from scorer.config import load_settings
from scorer.score.run import score_paths
from scorer.scoring.assembly import open_engine
from scorer.scoring.engine import Engine, Item
from scorer.settings import Settings
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.learners import build_learner, detail_design
from tests.support.workbooks import column

CLASSES = ("Low", "Neutral", "High")


@pytest.fixture
def quantise_small_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test learners run in well under a millisecond an image, where int8 is neither tried nor faster."""
    monkeypatch.setattr(precision, "MIN_FP32_MS", 0.0)
    monkeypatch.setattr(precision, "MIN_SPEEDUP", 0.0)


@pytest.fixture(scope="module")
def confident_learner(tmp_path_factory: pytest.TempPathFactory, tiny_learner: Path) -> Path:
    """The tiny learner (tests/conftest.py): a resnet18 whose answers are confident by construction, with logit
    margins of 12 and more on its colours and on photo-like images, where a trained one's confidence changes
    with the CPU's kernels."""
    path = tmp_path_factory.mktemp("confident") / "learner.pkl"
    shutil.copy(tiny_learner, path)
    return path


@pytest.fixture(scope="module")
def soft_learner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resnet18 whose answers sit close together and follow faint detail (tests/support/learners.py): the rounding of
    int8 activations moves them."""
    return build_learner(tmp_path_factory.mktemp("soft") / "learner.pkl", detail_design())


def _settings(tmp_path: Path, learner: Path, decode: str = "auto", mode: str = "auto") -> Settings:
    models = tmp_path / "models"
    models.mkdir(parents=True, exist_ok=True)
    model = models / learner.name
    if not model.exists():
        shutil.copy(learner, model)
    (tmp_path / "outbox").mkdir(exist_ok=True)
    settings = load_settings(None, model=model, outbox=tmp_path / "outbox", state=tmp_path / "state")
    return dataclasses.replace(settings, classes=CLASSES, precision=mode,  # type: ignore[arg-type]
                               images=dataclasses.replace(settings.images, decode=decode))


def _creatives(folder: Path, n: int, seed: int = 0) -> list[Item]:
    colours = list(CLASS_COLOURS.values())
    return [Item(path, path.name) for path in
            (write_creative(folder / f"c{seed}_{i:02d}.jpg", colours[i % 3], (120, 90), seed=seed + i)
             for i in range(n))]


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    opened: list[Engine] = []
    yield opened
    for engine in opened:
        engine.close()


def _open(settings: Settings, engines: list[Engine]) -> Engine:
    engine = open_engine(settings)
    engines.append(engine)
    return engine


def _probs(engine: Engine, items: list[Item]) -> np.ndarray:
    result = engine.score(items)
    got = {s.location: s.probs for s in result.scored}
    return np.array([got[str(item.path)] for item in items])


@pytest.mark.slow
def test_a_confident_learner_scores_in_int8_once_its_first_creatives_agree(
        tmp_path: Path, confident_learner: Path, quantise_small_models: None, engines: list[Engine],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # at 32 px the decode check keeps JPEGs at full size; `fast` leaves the choice to int8's own check
    settings = _settings(tmp_path, confident_learner, decode="fast")
    engine = _open(settings, engines)
    assert engine.info.precision.startswith("auto: fp32 while the first creatives are checked (0 of 16)")
    first = _creatives(tmp_path / "first", precision.PROBE_CREATIVES)
    probation = _probs(engine, first)
    assert engine.info.runtime.endswith("int8") and engine.info.precision.startswith("auto: int8.")
    kept = json.loads((settings.state / "precision" / f"{engine.opened.sha256}.json").read_text())
    assert kept["use_int8"] and kept["creatives"] == precision.PROBE_CREATIVES and kept["agreement"]["flips"] == 0
    full = _open(dataclasses.replace(settings, precision="fp32"), engines)
    # on probation the creatives were scored in fp32, exactly as the full-precision runtime scores them
    assert np.abs(probation - _probs(full, first)).max() <= 1e-6
    assert (probation.argmax(1) == np.arange(len(first)) % 3).all()  # each creative's colour class
    later = _creatives(tmp_path / "later", 9, seed=50)
    int8 = _probs(engine, later)
    fp32 = _probs(full, later)
    assert (int8.argmax(1) == fp32.argmax(1)).all() and np.abs(int8 - fp32).mean() <= precision.MEAN_DP_LIMIT
    assert not np.array_equal(int8, fp32)  # it is another runtime, not the same numbers relabelled

    # the Model sheet says which precision scored the creatives, and why
    report = score_paths(settings, [later[0].path], engine=engine).report
    items = column(report, "Model", "Item")
    values = dict(zip(items, column(report, "Model", "Value"), strict=True))
    assert str(values["Precision"]).startswith("auto: int8.") and str(values["Runtime"]).endswith("int8")

    # a later run reads the finding and the pinned int8 file back: nothing is quantised again
    def refuse(*args: object) -> bytes:
        raise AssertionError("quantised again")

    monkeypatch.setattr(precision, "quantize_int8", refuse)
    again = _open(settings, engines)
    assert again.info.runtime.endswith("int8")
    assert np.allclose(_probs(again, later), int8, atol=1e-6)


@pytest.mark.slow
def test_a_soft_learner_keeps_fp32_and_gets_exactly_its_fp32_answers(
        tmp_path: Path, soft_learner: Path, quantise_small_models: None, engines: list[Engine]) -> None:
    # `fast` drafts every JPEG, so only int8's own figures can keep it out
    settings = _settings(tmp_path, soft_learner, decode="fast")
    engine = _open(settings, engines)
    finding = json.loads((settings.state / "precision" / f"{engine.info.sha256}.json").read_text())
    assert not finding["use_int8"]
    assert finding["agreement"]["flips"] > 0 or finding["agreement"]["sum_abs_dp"] / finding["agreement"][
        "values"] > precision.MEAN_DP_LIMIT
    assert engine.info.precision.startswith("auto: fp32, int8 failed the check.")
    assert not engine.info.runtime.endswith("int8")
    items = _creatives(tmp_path / "in", 20)
    scored = _probs(engine, items)
    fp32 = _probs(_open(dataclasses.replace(settings, precision="fp32"), engines), items)
    assert np.abs(scored - fp32).max() <= 1e-6


def test_int8_is_not_tried_where_it_cannot_help_or_exact_answers_are_asked_for(
        tmp_path: Path, tiny_learner: Path, engines: list[Engine]) -> None:
    cheap = _open(_settings(tmp_path / "a", tiny_learner, decode="fast"), engines)
    assert "ms per image here, too little for int8 to matter" in cheap.info.precision
    exact = _open(_settings(tmp_path / "b", tiny_learner, decode="exact"), engines)
    assert "decoded at full size" in exact.info.precision
    assert not (tmp_path / "b" / "state" / "precision").exists()
    off = _open(_settings(tmp_path / "c", tiny_learner, mode="fp32"), engines)
    assert off.info.precision == "fp32 (precision: fp32), int8 not tried"
    for folder in ("a", "b", "c"):
        assert not list((tmp_path / folder / "models").glob("*.int8.onnx"))


@pytest.mark.slow
def test_an_int8_file_that_is_not_the_pinned_one_is_made_and_checked_again(
        tmp_path: Path, confident_learner: Path, quantise_small_models: None, engines: list[Engine]) -> None:
    settings = _settings(tmp_path, confident_learner, decode="fast")
    first = _open(settings, engines)
    first.score(_creatives(tmp_path / "first", precision.PROBE_CREATIVES))
    assert first.info.runtime.endswith("int8")
    (made,) = (tmp_path / "models").glob("*.int8.onnx")
    made.write_bytes(made.read_bytes() + b"\0")
    second = _open(settings, engines)
    # checked again from the start: fp32 on probation, and the file made anew
    assert second.info.precision.startswith("auto: fp32 while the first creatives are checked (0 of 16)")
    assert not made.read_bytes().endswith(b"\0")


def _finding(fp32_ms: float, int8_ms: float, dp: float, flips: bool, cosine: float = 1.0,
              outlier: float = 0.0) -> PrecisionFinding:
    exact = np.tile([[0.1, 0.2, 0.7]], (100, 1))
    other = exact + np.array([dp, 0.0, -dp])
    other[1] += [outlier, 0.0, -outlier]
    if flips:
        other[0] = [0.7, 0.2, 0.1]
    agreement = Agreement()
    agreement.add(exact, other)
    return PrecisionFinding("ab" * 32, fp32_ms=fp32_ms, int8_ms=int8_ms, agreement=agreement, min_cosine=cosine,
                             check_images=16, creatives=precision.PROBE_CREATIVES)


@pytest.mark.parametrize(
    ("finding", "use"),
    [
        (_finding(30.0, 9.0, 0.0, False), True),
        (_finding(30.0, 9.0, 0.0015, False), True),  # mean over the three classes: 0.001
        (_finding(30.0, 9.0, 0.003, False), False),  # mean 0.002: over the limit
        (_finding(30.0, 9.0, 0.0, True), False),  # one answer flipped
        (_finding(30.0, 9.0, 0.0, False, outlier=0.06), False),  # one creative moved far, though the mean is low
        (_finding(30.0, 9.0, 0.0, False, cosine=0.99), False),  # the evidence index would see other embedding
        (_finding(30.0, 27.0, 0.0, False), False),  # not fast enough on this machine to be worth it
    ],
)
def test_int8_needs_every_limit(finding: PrecisionFinding, use: bool) -> None:
    assert finding.use_int8 is use
    back = PrecisionFinding.from_json(json.loads(json.dumps(finding.to_json())))
    assert back == finding and back.use_int8 is use


def test_a_model_the_quantiser_cannot_take_is_scored_in_fp32_with_the_reason(
        tmp_path: Path, confident_learner: Path, quantise_small_models: None, engines: list[Engine],
        monkeypatch: pytest.MonkeyPatch) -> None:
    def fails(*args: object) -> bytes:
        raise RuntimeError("Unsupported op: SomeCustomOp")

    monkeypatch.setattr(precision, "quantize_int8", fails)
    settings = _settings(tmp_path, confident_learner, decode="fast")
    engine = _open(settings, engines)
    assert engine.info.precision == "auto: fp32, int8 not tried: int8 quantisation failed (RuntimeError)"
    items = _creatives(tmp_path / "in", 6)
    scored = _probs(engine, items)  # the fp32 session, closed while the quantiser ran, is open again
    fp32 = _probs(_open(dataclasses.replace(settings, precision="fp32"), engines), items)
    assert np.abs(scored - fp32).max() <= 1e-6
    assert not list((tmp_path / "models").glob("*.int8.onnx"))


class _Logits:
    """A runtime that answers every batch with fixed logits, shifted once `drift` is set: int8 meeting creatives
    unlike the first ones."""

    def __init__(self, name: str) -> None:
        self.name, self.device, self.calls, self.drift = name, "cpu", 0, 0.0

    def run(self, batch: np.ndarray) -> tuple[np.ndarray, None]:
        self.calls += 1
        logits = np.tile([[0.0, 1.0, 2.0]], (len(batch), 1)) + [self.drift, 0.0, -self.drift]
        return logits, None


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(e / e.sum(axis=1, keepdims=True))


@pytest.mark.parametrize(("int8_ms", "said"), [(9.0, "int8 3.3× faster (9.0 vs 30.0 ms per image)"),
                                              (60.0, "int8 2.0× slower (60.0 vs 30.0 ms per image)")])
def test_the_speed_of_int8_is_said_as_faster_or_slower(int8_ms: float, said: str) -> None:
    finding = _finding(30.0, int8_ms, 0.0, False)
    assert said in finding.describe() and "as fast" not in finding.describe()


def test_int8_in_use_is_audited_and_sent_back_to_fp32_when_creatives_stop_agreeing(tmp_path: Path) -> None:
    fp32, int8 = _Logits("fp32"), _Logits("int8")
    finding = PrecisionFinding("ab" * 32, fp32_ms=30.0, int8_ms=9.0, check_images=8,
                                 creatives=precision.PROBE_CREATIVES)
    finding.add(fp32.run(np.zeros((24, 1))), int8.run(np.zeros((24, 1))), _softmax)
    assert finding.use_int8
    store = tmp_path / "precision.json"
    check = precision.PrecisionCheck("auto", fp32, _softmax, int8=int8, finding=finding, store=store)
    batch = np.zeros((16, 1))
    fp32.calls = int8.calls = 0
    for _ in range(precision.AUDIT_EVERY // 16 - 1):
        check.run(batch)
    assert (fp32.calls, int8.calls) == (0, precision.AUDIT_EVERY // 16 - 1)  # int8 alone between audits
    check.run(batch)  # the audit: agrees, so int8 stays
    assert fp32.calls == 1 and finding.audited == 16 and check.runtime is int8
    assert json.loads(store.read_text())["use_int8"]
    int8.drift = 1.5  # creatives on which int8 moves the answers
    for _ in range(precision.AUDIT_EVERY // 16):
        answer = check.run(batch)
    assert not finding.use_int8 and check.runtime is fp32
    assert np.array_equal(answer[0], fp32.run(batch)[0])  # the audited batch gets fp32's answers
    kept = json.loads(store.read_text())
    assert not kept["use_int8"] and kept["audited"] == 32
    calls = int8.calls
    check.run(batch)
    assert int8.calls == calls  # fp32 from now on, for good
    assert "fp32, int8 failed the check" in check.describe() and "32 audited since" in check.describe()
