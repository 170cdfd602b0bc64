"""Training's side of fastai: fit a vision learner on labelled rows, and export it for scoring.

What `scorer train` needs from fastai: labelled rows in, a fitted learner and its validation
predictions out. Evaluation, the model card and the files around the model belong to training/train.py.
"""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import torch
from fastai.vision.all import (
    CategoryBlock,
    ColReader,
    ColSplitter,
    DataBlock,
    ImageBlock,
    Learner,
    Normalize,
    Resize,
    accuracy,
    aug_transforms,
    imagenet_stats,
    set_seed,
    vision_learner,
)

from scorer.errors import ConfigError, ModelError
from scorer.model.learner import CLASSES_ATTR
from scorer.settings import TrainSettings

log = logging.getLogger(__name__)

# urllib waits forever on a firewall that drops packets: bound each connect and read instead.
_DOWNLOAD_TIMEOUT_S = 30


@dataclass(frozen=True)
class Fitted:
    """A fitted learner and its probabilities for the validation rows, classes in the order given."""

    learner: Learner
    valid_probs: np.ndarray
    valid_rows: np.ndarray


def resolve_arch(name: str, pretrained: bool) -> Any:
    """What `vision_learner` takes for an architecture name: a torchvision function, or a timm name."""
    import torchvision

    if name in torchvision.models.list_models(module=torchvision.models):
        if pretrained:
            _fetch_torchvision_weights(name)
        return getattr(torchvision.models, name)
    try:
        import timm
    except ImportError:
        raise ConfigError(
            f"'train.arch' {name!r} is not a torchvision classification model: use one such as resnet18, resnet34, "
            "efficientnet_b0 or convnext_tiny, or pip install timm to use timm names"
        ) from None
    if name not in timm.list_models(pretrained=pretrained):
        raise ConfigError(f"'train.arch' {name!r} is neither a torchvision nor a timm model: check the spelling")
    return name


def _fetch_torchvision_weights(name: str) -> None:
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    file = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if file.is_file():
        return
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(_DOWNLOAD_TIMEOUT_S)
    try:
        weights.get_state_dict(progress=True, check_hash=True)
    except (OSError, RuntimeError) as exc:  # URLError and timeouts are OSErrors; a bad hash is a RuntimeError
        reason = getattr(exc, "reason", exc)
        raise ModelError(
            f"pretrained weights for {name} could not be downloaded ({reason}): put {file.name} from {weights.url} "
            f"into {file.parent} (TORCH_HOME moves it), or set 'train.pretrained: false' in config.yaml"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)


def fit_classifier(table: pd.DataFrame, classes: Sequence[str], train: TrainSettings, device: str,
                   threads: int, progress: bool) -> Fitted:
    """Fine-tune a vision learner on rows with `image`, `label` and `is_valid`, then predict the validation rows."""
    arch = resolve_arch(train.arch, train.pretrained)
    if threads:
        # On a busy machine, more threads than free cores makes PyTorch's CPU training many times slower.
        torch.set_num_threads(threads)
    table = table.reset_index(drop=True)
    set_seed(train.seed, reproducible=True)
    batch_tfms = aug_transforms()
    if not isinstance(arch, str):
        # fastai adds ImageNet statistics only for architectures in its own table and only when pretrained.
        batch_tfms.append(Normalize.from_stats(*imagenet_stats))
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=list(classes), sort=False)),
        get_x=ColReader("image"), get_y=ColReader("label"), splitter=ColSplitter("is_valid"),
        item_tfms=Resize(train.image_size), batch_tfms=batch_tfms,  # frames.training_geometry says it for scoring
    )
    n_train = int((~table["is_valid"]).sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dls = block.dataloaders(table, bs=min(train.batch_size, n_train), num_workers=train.workers,
                                device=torch.device(device))
        learn = vision_learner(dls, arch, pretrained=train.pretrained, metrics=accuracy)
        if not progress:
            # Without its bars fastai print()s each epoch's row as a bare list: log it with names instead.
            learn.logger = lambda row: log.info("  ".join(
                f"{name} {value:.4g}" if isinstance(value, float) else f"{name} {value}"
                for name, value in zip(learn.recorder.metric_names, row, strict=False)))
        with nullcontext() if progress else learn.no_bar():
            if train.pretrained:
                learn.fine_tune(train.epochs, base_lr=train.learning_rate)
            else:
                learn.fit_one_cycle(train.epochs, train.learning_rate)
            probs, _ = learn.get_preds(dl=dls.valid)
    learn.logger = print  # the export must not refer to scorer code
    return Fitted(learn, probs.numpy(), dls.valid.items.index.to_numpy())


def export_learner(learn: Learner, path: Path, classes: Sequence[str]) -> None:
    """Save with `learn.export()`, with the low-to-high class order that scoring reads back."""
    setattr(learn, CLASSES_ATTR, list(classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn.export(path)
