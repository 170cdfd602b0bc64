"""Shared fixtures: the tiny learner (built once per run), a project folder, trained accounts, the watch
service's project and services, and the fake colour engine. Shared functions are in tests/support/helpers.py."""

from __future__ import annotations

import os
import pickle
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from filelock import FileLock

from scorer.config import load_settings
from scorer.scoring.engine import Engine
from tests.support.contextgen import Account, train_account, write_account
from tests.support.fakes import colour_engine
from tests.support.helpers import RENAMED, Project, Service, after_first_start, train_tiny_learner
from tests.support.imagegen import CLASS_COLOURS
from tests.support.postgen import csv_to_instaloader

T = TypeVar("T")


# The files that take longest, started first so that none of them is left to run alone at the end; the rest
# follow by their number of tests, as xdist orders them.
_FIRST = ("tests/bulk", "tests/test_demo.py", "tests/model/test_learner.py", "tests/decoding/test_hostile.py",
          "tests/training/test_train.py", "tests/watch/test_latest_rebuild.py")


@pytest.hookimpl(optionalhook=True)  # only pytest-xdist knows it
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`make test`'s --dist loadfile, except that tests/bulk goes to one worker as one unit (its local Ray, in
    tests/bulk/conftest.py, is then started once per run and stopped when the package is done), and that the
    longest files start first."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ByFileAndBulk(LoadFileScheduling):
        _first_moved = False

        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return "tests/bulk" if scope.startswith("tests/bulk/") else scope

        def _assign_work_unit(self, node: object) -> None:  # type: ignore[override]
            if not self._first_moved:  # the queue is whole at the first assignment
                self._first_moved = True
                for scope in reversed([scope for scope in _FIRST if scope in self.workqueue]):
                    self.workqueue.move_to_end(scope, last=False)
            super()._assign_work_unit(node)  # type: ignore[arg-type]

    return ByFileAndBulk(config, log)


def made_once(factory: pytest.TempPathFactory, name: str, make: Callable[[Path], T]) -> T:
    """`make(folder)` once per test run, its result shared by every pytest-xdist worker (which would otherwise
    each make their own): the first worker to ask makes it under a lock, the others wait and read it."""
    base = factory.getbasetemp()
    folder = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / f"made-once-{name}"
    with FileLock(f"{folder}.lock"):
        result = folder / "result.pickle"
        if not result.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            result.write_bytes(pickle.dumps(make(folder)))
        value: T = pickle.loads(result.read_bytes())
    return value


@pytest.fixture(scope="session")
def tiny_learner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resnet18 learner with classes High/Low/Neutral that maps blue→Low, green→Neutral, red→High, confidently.

    Built with set weights (tests/support/learners.py), not trained: the tests that use it are about what happens
    around a model, and need one that behaves the same on every CPU.
    """
    from tests.support.learners import (  # torch: not in xdist's controller, which runs no test
        build_learner,
        colour_design,
    )

    return made_once(tmp_path_factory, "tiny", lambda folder: build_learner(folder / "tiny.pkl", colour_design()))


@pytest.fixture(scope="session")
def renamed_learner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same, with classes bronze/silver/gold, whose order cannot be inferred from the names."""
    from tests.support.learners import build_learner, colour_design

    return made_once(tmp_path_factory, "renamed",
                     lambda folder: build_learner(folder / "renamed.pkl", colour_design(), names=RENAMED))


@pytest.fixture(scope="session")
def trained_learner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resnet18 trained on colours as a user's notebook would train it (blue→Low, green→Neutral, red→High),
    for the tests of loading and running a learner trained elsewhere."""
    return made_once(tmp_path_factory, "trained",
                     lambda folder: train_tiny_learner(folder / "data", CLASS_COLOURS, folder / "trained.pkl"))


@pytest.fixture
def project(tmp_path: Path, tiny_learner: Path) -> Project:
    """A fresh project whose config points at a copy of the tiny learner."""
    proj = Project(tmp_path / "proj")
    for name in ("inbox", "outbox", "models"):
        (proj.root / name).mkdir(parents=True)
    shutil.copy(tiny_learner, proj.models / "tiny.pkl")
    os.chmod(proj.models / "tiny.pkl", 0o644)
    proj.write_config("model: models/tiny.pkl\n")
    return proj


@pytest.fixture(scope="session")
def hour_signal(tmp_path_factory: pytest.TempPathFactory) -> Account:
    """A synthetic account, as posts.csv, whose posts at 18:00 get twice the likes whatever the picture; made once
    for all workers, so its tests read it and change only copies."""
    def make(root: Path) -> Account:
        write_account(root / "data", hour_matters=True)
        return train_account(root, root / "data")

    return made_once(tmp_path_factory, "hour-signal", make)


@pytest.fixture(scope="session")
def hour_noise(tmp_path_factory: pytest.TempPathFactory) -> Account:
    """The same kind of account, as an Instaloader folder, whose doubled posts are chosen at random."""
    def make(root: Path) -> Account:
        profile = csv_to_instaloader(write_account(root / "data", hour_matters=False, seed=1), root / "shop")
        return train_account(root, profile)

    return made_once(tmp_path_factory, "hour-noise", make)


# A `scorer watch` project with the tiny learner's ONNX export made once, and the services a test starts.

@pytest.fixture(scope="session")
def first_start(tiny_learner: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder as the tiny learner's first start leaves it (see helpers.after_first_start), made once."""
    from scorer.scoring.classifier import Classifier

    def make(root: Path) -> Path:
        (root / "models").mkdir()
        shutil.copy(tiny_learner, root / "models/tiny.pkl")
        (root / "config.yaml").write_text("model: models/tiny.pkl\n")
        Classifier(load_settings(root / "config.yaml"))
        return root

    return made_once(tmp_path_factory, "first-start", make)


@pytest.fixture
def watched(project: Project, first_start: Path) -> Project:
    """The project with the tiny learner already exported, pinned and recorded, so that each `scorer watch`
    starts without exporting, and without fastai when it draws no Grad-CAM (as `configure` sets)."""
    after_first_start(first_start, project.root)
    return project


@pytest.fixture
def services() -> Iterator[list[Service]]:
    running: list[Service] = []
    yield running
    for service in running:
        service.close()


# The fake colour model's engine, shared by the tests of a module.

@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    eng = colour_engine()
    yield eng
    eng.close()
