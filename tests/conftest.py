"""Shared fixtures: generated images, a tiny real fastai learner (trained once per session) and a project folder."""

from __future__ import annotations

import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.contextgen import Account, train_account, write_account
from tests.imagegen import CLASS_COLOURS, labelled_set
from tests.postgen import csv_to_instaloader

RENAMED = {"Low": "bronze", "Neutral": "silver", "High": "gold"}


def tool_or_warn(name: str, what: str) -> str | None:
    """The path of an optional checking tool; when it is missing, a warning says what went unchecked.

    Used after a test's own assertions have passed, so the test still reports as passed.
    """
    path = shutil.which(name)
    if path is None:
        warnings.warn(f"{name} is not installed, so this was not checked: {what}", stacklevel=2)
    return path


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
        learn.export(out)
    torch.set_num_threads(threads)
    os.chmod(out, 0o644)
    return out


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
