"""Model integrity: pinned SHA-256, trust on first use, and refusing files that others can change."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from scorer.cli import main
from scorer.config import load_settings
from tests.conftest import Project
from tests.imagegen import CLASS_COLOURS, write_creative


def _score(project: Project) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "scorer", "score", str(project.inbox), "--config", str(project.config)]
    return subprocess.run(args, capture_output=True, text=True, timeout=300)


@pytest.fixture
def creative_in(project: Project) -> Project:
    write_creative(project.inbox / "a.jpg", CLASS_COLOURS["High"], (64, 64))
    return project


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


def test_model_pin_can_switch_to_another_model(project: Project, tmp_path: Path) -> None:
    other = project.models / "other.pkl"
    shutil.copy(project.models / "tiny.pkl", other)
    result = CliRunner().invoke(main, ["model", "pin", str(other), "--config", str(project.config)])
    assert result.exit_code == 0
    settings = load_settings(project.config)
    assert settings.model == other and settings.model_sha256 == _sha(other)


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
    assert "is not a learner saved with learn.export()" in result.output
