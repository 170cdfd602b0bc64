"""Model integrity: pinned SHA-256, trust on first use, and refusing files that others can change."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from scorer.cli import main
from scorer.config import load_settings
from tests.support.helpers import Project
from tests.support.imagegen import CLASS_COLOURS, write_creative
from tests.support.learners import build_learner, patch_design


def _score(project: Project) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "scorer", "score", str(project.inbox), "--config", str(project.config)]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


@pytest.fixture
def creative_in(watched: Project) -> Project:
    write_creative(watched.inbox / "a.jpg", CLASS_COLOURS["High"], (64, 64))
    # as the tiny learner's first start left it (its export and fast start, not its pin), with no Grad-CAM:
    # each start whose pin allows it opens the checked export without fastai
    watched.write_config("model: models/tiny.pkl\nreport:\n  explain: never\n")
    return watched


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_first_use_pins_and_a_tampered_model_is_refused(creative_in: Project) -> None:
    project = creative_in
    model = project.models / "tiny.pkl"
    first = _score(project)
    assert first.returncode == 0, first.stderr
    assert f"pinned on first use: sha256 {_sha(model)}" in first.stderr
    pins = json.loads((project.root / "state" / "model-pins.json").read_text())
    assert pins == {str(model.resolve()): _sha(model)}

    with open(model, "ab") as handle:
        handle.write(b"\0")
    refused = _score(project)
    assert refused.returncode == 2
    (line,) = refused.stderr.strip().splitlines()
    assert "has changed since it was pinned" in line
    assert f"if you trust the new file, run `scorer model pin {model}`" in line
    assert len(project.reports()) == 1, "nothing may be scored with a refused model"


@pytest.mark.slow
def test_model_pin_writes_config_and_is_enforced(creative_in: Project, tmp_path: Path) -> None:
    project = creative_in
    model = project.models / "tiny.pkl"
    pinned = CliRunner().invoke(main, ["model", "pin", str(model), "--config", str(project.config)])
    assert pinned.exit_code == 0, pinned.output
    assert load_settings(project.config).model_sha256 == _sha(model)
    assert _score(project).returncode == 0

    shutil.copy(model, tmp_path / "backup.pkl")
    with open(model, "ab") as handle:
        handle.write(b"tampered")
    refused = _score(project)
    assert refused.returncode == 2
    assert "model_sha256 in config.yaml" in refused.stderr and "scorer model pin" in refused.stderr

    # After re-checking the file, the operator pins it again and scoring resumes.
    shutil.copy(tmp_path / "backup.pkl", model)
    assert _score(project).returncode == 0


def test_model_pin_can_switch_to_another_model_and_says_so(project: Project, tmp_path: Path) -> None:
    other = project.models / "other.pkl"
    shutil.copy(project.models / "tiny.pkl", other)
    (project.models / "other.index.parquet").write_bytes(b"the evidence index beside it")
    result = CliRunner().invoke(main, ["model", "pin", str(other), "--config", str(project.config)])
    assert result.exit_code == 0
    assert result.output.splitlines() == [
        f"pinned {other}: sha256 {_sha(other)} (model_sha256 in {project.config})",
        f"model in {project.config} changed from {project.models / 'tiny.pkl'} to {other}: scoring now uses this file",
        f"also pinned, as it is used with the model: {project.models / 'other.index.parquet'}",
    ]
    settings = load_settings(project.config)
    assert settings.model == other and settings.model_sha256 == _sha(other)
    again = CliRunner().invoke(main, ["model", "pin", str(other), "--config", str(project.config)])
    assert again.output.splitlines() == result.output.splitlines()[::2], "the model config names: not changed"


def _not_a_learner(path: Path, content: str) -> None:
    import pickle
    import zipfile

    import torch

    if content == "weights":
        torch.save({"fc.weight": torch.zeros(3, 4)}, path)
    elif content == "legacy":
        torch.save({"fc.weight": torch.zeros(3, 4)}, path, _use_new_zipfile_serialization=False)
    elif content == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("export/model.json", "{}")
    else:
        path.write_bytes({"text": b"learner = 'engagement'\n", "empty": b"", "png": b"\x89PNG\r\n\x1a\n0000",
                          "pickle": pickle.dumps({"not": "a learner"})}[content])


@pytest.mark.parametrize(("content", "what"), [
    ("text", "a text file"),
    ("empty", "an empty file"),
    ("png", "a PNG image"),
    ("pickle", "a plain pickle, not a PyTorch file"),
    ("zip", "a zip archive without data.pkl, not a PyTorch file"),
    ("weights", "a PyTorch file without a fastai Learner in it (a model or weights saved with torch.save?)"),
    ("legacy", "a PyTorch file in the format before PyTorch 1.6"),
])
def test_pin_refuses_a_file_that_is_not_a_learner_and_says_what_it_is(project: Project, content: str,
                                                                       what: str) -> None:
    path = project.models / "engagement.pkl"
    _not_a_learner(path, content)
    before = project.config.read_text()
    result = CliRunner().invoke(main, ["model", "pin", str(path), "--config", str(project.config)])
    assert result.exit_code == 2
    assert result.output == (f"error: {path} is {what}, not a learner saved with fastai's learn.export(): pass "
                             "the .pkl file that learn.export() wrote\n")
    assert project.config.read_text() == before and not (project.root / "state").exists(), "nothing is pinned"


def test_a_file_that_is_not_a_learner_is_refused_at_first_use_and_never_pinned(project: Project) -> None:
    learner = project.models / "tiny.pkl"
    saved = learner.read_bytes()
    _not_a_learner(learner, "text")
    (project.inbox / "a.jpg").write_bytes(b"")
    args = ["score", str(project.inbox), "--config", str(project.config)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    assert result.output == (f"error: {learner} is a text file, not a learner saved with fastai's learn.export(): "
                             "pass the .pkl file that learn.export() wrote\n")
    assert not (project.root / "state").exists(), "nothing is pinned on a refused first use"
    learner.write_bytes(saved)  # the real learner copied in under that name is trusted on its own first use
    assert CliRunner().invoke(main, args).exit_code == 0


@pytest.mark.parametrize("mode", [0o664, 0o646])
def test_model_writable_by_others_is_refused(creative_in: Project, mode: int) -> None:
    model = creative_in.models / "tiny.pkl"
    os.chmod(model, mode)
    result = CliRunner().invoke(main, ["score", str(creative_in.inbox), "--config", str(creative_in.config)])
    assert result.exit_code == 2
    assert f"can be written by group or others: run `chmod go-w {model}`" in result.output


@pytest.mark.parametrize("folder", ["inbox", "outbox"])
def test_model_is_never_loaded_from_the_inbox_or_outbox(creative_in: Project, folder: str) -> None:
    shutil.copy(creative_in.models / "tiny.pkl", creative_in.root / folder / "dropped.pkl")
    creative_in.write_config(f"model: {folder}/dropped.pkl\n")
    result = CliRunner().invoke(main, ["score", str(creative_in.inbox / "a.jpg"), "--config", str(creative_in.config)])
    assert result.exit_code == 2
    assert f"is inside the {folder}, where anyone may drop files: move it to models/" in result.output


def test_a_file_that_is_not_a_learner_is_a_clear_error(creative_in: Project) -> None:
    (creative_in.models / "tiny.pkl").write_bytes(b"not a pickle at all")
    result = CliRunner().invoke(main, ["score", str(creative_in.inbox), "--config", str(creative_in.config)])
    assert result.exit_code == 2
    assert result.output == (f"error: {creative_in.models / 'tiny.pkl'} is a text file, not a learner saved with "
                             "fastai's learn.export(): pass the .pkl file that learn.export() wrote\n")


def test_model_in_a_folder_others_can_write_is_refused(creative_in: Project) -> None:
    os.chmod(creative_in.models, 0o775)  # the user's own folder, which its group can write: chmod is safe
    result = CliRunner().invoke(main, ["score", str(creative_in.inbox), "--config", str(creative_in.config)])
    assert result.exit_code == 2
    assert f"the model's folder {creative_in.models.resolve()} can be written by group or others" in result.output
    assert f"run `chmod go-w {creative_in.models.resolve()}`" in result.output


def _placed(tiny: Path, tmp_path: Path, place: str) -> Path:
    """A copy of the tiny learner where another user could change it; "/tmp" is the real one."""
    if place == "/tmp":
        fd, name = tempfile.mkstemp(dir="/tmp", prefix="scorer-test-", suffix=".pkl")
        os.close(fd)
        shutil.copy(tiny, name)
        return Path(name)
    folder = tmp_path / place.replace(" ", "-").replace("'", "")
    folder.mkdir()
    model = Path(shutil.copy(tiny, folder / "model.pkl"))
    if place.startswith("another user"):
        if os.geteuid() != 0:
            pytest.skip("only root can give a folder or file to another user")
        os.chown(model if place.endswith("file") else folder, 65534, 65534)
    os.chmod(folder, {"sticky": 0o1777, "world-writable": 0o777, "another user's": 0o775}.get(place, 0o755))
    os.chmod(model, 0o664 if place.endswith("file") else 0o644)
    return model


@pytest.mark.parametrize("place", ["/tmp", "sticky", "world-writable", "another user's", "another user's file"])
@pytest.mark.parametrize("command", ["score", "pin"])
def test_advice_never_touches_a_folder_other_users_share(creative_in: Project, tmp_path: Path, place: str,
                                                         command: str) -> None:
    model = _placed(creative_in.models / "tiny.pkl", tmp_path, place)
    args = {"score": ["score", str(creative_in.inbox), "--model", str(model)], "pin": ["model", "pin", str(model)]}
    before = creative_in.config.read_text()
    try:
        result = CliRunner().invoke(main, [*args[command], "--config", str(creative_in.config)])
    finally:
        if place == "/tmp":
            model.unlink()
    assert result.exit_code == 2
    assert result.output == (f"error: model {model} is in {model.parent}, where other users can change it: copy it "
                             f"into a folder that only you can write, such as {creative_in.models}, and use that "
                             "copy\n")
    assert creative_in.config.read_text() == before and creative_in.reports() == []


_SWAP: dict[str, object] = {}


def _swap_on_reopen(event: str, args: tuple[object, ...]) -> None:
    # An audit hook cannot be removed: it acts only while a test arms it.
    if event != "open" or not _SWAP or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    if os.fsdecode(args[0]) != _SWAP["path"]:
        return
    _SWAP["opens"] = int(_SWAP["opens"]) + 1  # type: ignore[call-overload]
    if _SWAP["opens"] == 2:  # the file is opened again after its hash was checked: swap it right now
        shutil.copyfile(str(_SWAP["other"]), str(_SWAP["path"]))


sys.addaudithook(_swap_on_reopen)


def test_the_bytes_that_are_hashed_are_the_bytes_that_are_loaded(project: Project, renamed_learner: Path) -> None:
    from scorer.scoring.classifier import Classifier

    project.write_config("model: models/tiny.pkl\nruntime: torch\n")
    model = project.models / "tiny.pkl"
    pinned = _sha(model)
    _SWAP.update(path=str(model.resolve()), other=renamed_learner, opens=0)
    try:
        classifier = Classifier(load_settings(project.config))
    finally:
        opens = _SWAP["opens"]
        _SWAP.clear()
    assert opens == 1, "the model file is read once"
    assert classifier.sha256 == pinned and classifier.classes == ("Low", "Neutral", "High")


def _onnx_classifier(project: Project, extra: str = ""):  # type: ignore[no-untyped-def]
    from scorer.scoring.classifier import Classifier

    project.write_config(f"model: models/tiny.pkl\nruntime: onnx\ndevice: cpu\n{extra}")
    return Classifier(load_settings(project.config))


@pytest.mark.slow
def test_a_swapped_onnx_cache_is_refused_even_with_its_sidecar(
        project: Project, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import numpy as np

    first = _onnx_classifier(project)
    (cache,) = project.models.glob("*.onnx")
    pixels = np.random.default_rng(1).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    honest = first.predict_with_embedding(pixels)[0]
    # Another model's export put in its place, with a matching sidecar, as the old cache trusted.
    other = Project(tmp_path / "other")
    other.models.mkdir(parents=True)
    build_learner(other.models / "tiny.pkl", patch_design())  # another model: noise is a three-way tie to it
    _onnx_classifier(other)
    (forged,) = other.models.glob("*.onnx")
    shutil.copy(forged, cache)
    sidecar = {"learner_sha256": first.sha256, "onnx_sha256": _sha(cache)}
    cache.with_suffix(".json").write_text(json.dumps(sidecar))
    assert not np.allclose(_onnx_classifier(other).predict_with_embedding(pixels)[0], honest, atol=1e-3)
    second = _onnx_classifier(project)
    assert f"ONNX cache {cache} has changed since it was pinned" in caplog.text and "exporting again" in caplog.text
    assert np.allclose(second.predict_with_embedding(pixels)[0], honest, atol=1e-5)
    # Forging the state's pin as well: the outputs, checked against PyTorch at load, give it away.
    shutil.copy(forged, cache)
    pins_file = project.root / "state" / "derived-pins.json"
    pins = json.loads(pins_file.read_text())
    (key,) = [k for k in pins if k.endswith(f":{first.sha256}")]  # the export's kind, then the model's SHA
    pins[key] = _sha(cache)
    pins_file.write_text(json.dumps(pins))
    third = _onnx_classifier(project)
    assert "differs from PyTorch" in caplog.text
    assert np.allclose(third.predict_with_embedding(pixels)[0], honest, atol=1e-5)


def test_a_pinned_file_is_read_once_and_refused_by_its_pin_with_what_it_is_and_the_fix(tmp_path: Path) -> None:
    from scorer.model.integrity import PinMismatch, read_pinned

    path = tmp_path / "export.onnx"
    path.write_bytes(b"the pinned bytes")
    pin = _sha(path)
    assert read_pinned(path, pin.upper(), "ONNX export", "delete it") == b"the pinned bytes"  # a pin in capitals too
    assert read_pinned(b"the pinned bytes", pin, "the shipped model", "run again") == b"the pinned bytes"
    path.write_bytes(b"other bytes")
    with pytest.raises(PinMismatch) as refused:
        read_pinned(path, pin, f"ONNX export {path}", "delete it, and it is exported again", where="derived-pins.json")
    assert str(refused.value) == (f"ONNX export {path} has changed since it was pinned (sha256 {_sha(path)[:12]}…, "
                                  f"pinned {pin[:12]}… in derived-pins.json): delete it, and it is exported again")
    path.unlink()
    path.symlink_to(tmp_path)
    with pytest.raises(OSError):  # only a regular file is read: a link is not followed
        read_pinned(path, pin, "ONNX export", "delete it")


def test_content_is_hashed_only_through_fsutil() -> None:
    # the pin is verified in one function (integrity.read_pinned) on fsutil's one SHA-256 of content
    package = Path(__file__).resolve().parents[2] / "scorer"
    hashing = sorted(str(path.relative_to(package)) for path in package.rglob("*.py")
                     if "hashlib.sha256" in path.read_text(encoding="utf-8"))
    # the login cookie's HMAC and a destination's short key are not content hashes
    assert hashing == ["fsutil.py", "notify/destinations.py", "web/auth.py"]
    pinning = sorted(str(path.relative_to(package)) for path in package.rglob("*.py")
                     if "has changed since it was pinned" in path.read_text(encoding="utf-8"))
    assert pinning == ["model/integrity.py"]
