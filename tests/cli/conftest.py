"""Each CLI test runs in a bare folder of its own, so that no config.yaml is read but the one it writes."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's working folder: empty, with no ./config.yaml, so the built-in defaults apply until one is written."""
    monkeypatch.chdir(tmp_path)
    return Path.cwd()
