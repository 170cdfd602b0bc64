"""Shared fixtures: generated images, a tiny real fastai learner (trained once per session) and a project folder."""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.contextgen import Account, train_account, write_account
from tests.imagegen import CLASS_COLOURS, labelled_set
from tests.postgen import csv_to_instaloader

if TYPE_CHECKING:
    from fastai.learner import Learner

RENAMED = {"Low": "bronze", "Neutral": "silver", "High": "gold"}


def in_ci() -> bool:
    """Whether this is a CI run (CI=true, as CI services set it), where .ci/run has installed every real
    component the tests drive."""
    return os.environ.get("CI", "").lower() == "true"


def _absent(names: tuple[str, ...], package: str, what: str) -> str:
    """What a missing tool leaves unchecked; in CI, where a missing tool is a broken setup, the test fails."""
    message = f"{' or '.join(names)} is not installed, so this was not checked: {what} (apt-get install {package})"
    if in_ci():
        pytest.fail(message, pytrace=False)
    return message


def tool_or_warn(name: str, package: str, what: str) -> str | None:
    """The path of a checking tool, used after a test's own assertions have passed; when it is missing, the
    test fails in CI, and elsewhere passes with a warning that says what went unchecked."""
    path = shutil.which(name)
    if path is None:
        warnings.warn(_absent((name,), package, what), stacklevel=2)
    return path


def tool_or_skip(names: tuple[str, ...], package: str, what: str) -> str:
    """The path of the first of `names` installed, for a test that cannot run without it; when none is, the
    test fails in CI, and elsewhere is skipped with the reason."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    pytest.skip(_absent(names, package, what))


def train_tiny_learner(folder: Path, classes: dict[str, tuple[int, int, int]], out: Path,
                       method: str = "crop") -> Path:
    """Plain fastai, as a user's notebook would do it: train a small resnet18 on colours and export it."""
    import torch
    from fastai.vision.all import ImageDataLoaders, Resize, accuracy, resnet18, set_seed, vision_learner

    items = labelled_set(folder, per_class=16, classes=classes)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a single thread keeps float sums, and so the trained weights, reproducible
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        set_seed(0, reproducible=True)
        dls = ImageDataLoaders.from_lists(
            folder, [p for p, _ in items], [label for _, label in items], valid_pct=0.25, seed=0,
            item_tfms=Resize(32, method=method), bs=8, num_workers=0,
        )
        learn = vision_learner(dls, resnet18, pretrained=False, metrics=accuracy)
        learn.fit_one_cycle(10, 5e-3)
        # seeds do not make training reproducible across CPUs: the tests rely on it telling its colours apart,
        # so that is checked, and another CPU's learner gets a few more epochs to get there
        wrong = _misread(learn, items)
        for _ in range(3):
            if not wrong:
                break
            learn.fit(2, 1e-3)
            wrong = _misread(learn, items)
        learn.export(out)
    torch.set_num_threads(threads)
    if wrong:
        pytest.fail(f"precondition not reached: the tiny learner trained here tells {len(wrong)} of its "
                    f"{len(items)} colour images wrong ({', '.join(wrong[:4])})", pytrace=False)
    os.chmod(out, 0o644)
    return out


def _misread(learn: Learner, items: list[tuple[Path, str]]) -> list[str]:
    """The names of the images whose class the learner gets wrong."""
    probs, _ = learn.get_preds(dl=learn.dls.test_dl([p for p, _ in items], num_workers=0))
    return [p.name for (p, label), row in zip(items, probs, strict=True) if learn.dls.vocab[int(row.argmax())] != label]


@pytest.fixture(scope="session")
def tiny_learner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A resnet18 learner with classes High/Low/Neutral that maps blue→Low, green→Neutral, red→High."""
    root = tmp_path_factory.mktemp("tiny")
    return train_tiny_learner(root / "data", CLASS_COLOURS, root / "tiny.pkl")


@pytest.fixture(scope="session")
def renamed_learner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same task with classes bronze/silver/gold, whose order cannot be inferred from the names."""
    root = tmp_path_factory.mktemp("renamed")
    colours = {RENAMED[k]: v for k, v in CLASS_COLOURS.items()}
    return train_tiny_learner(root / "data", colours, root / "renamed.pkl")


@dataclass
class Project:
    """A scorer project folder: config.yaml, inbox/, outbox/, models/ and state/."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def write_config(self, text: str) -> Path:
        self.config.write_text(text, encoding="utf-8")
        return self.config

    def reports(self) -> list[Path]:
        return sorted(self.outbox.glob("engagement-report-*.xlsx"))


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
    """A synthetic account, as posts.csv, whose posts at 18:00 get twice the likes whatever the picture."""
    root = tmp_path_factory.mktemp("hour-signal")
    write_account(root / "data", hour_matters=True)
    return train_account(root, root / "data")


@pytest.fixture(scope="session")
def hour_noise(tmp_path_factory: pytest.TempPathFactory) -> Account:
    """The same kind of account, as an Instaloader folder, whose doubled posts are chosen at random."""
    root = tmp_path_factory.mktemp("hour-noise")
    profile = csv_to_instaloader(write_account(root / "data", hour_matters=False, seed=1), root / "shop")
    return train_account(root, profile)
