"""Learners whose behaviour is built in: real fastai learners whose weights are set, not trained.

A seed does not make training reproducible across CPUs: other kernels round differently and a
tiny net learns something else. So a test that needs a model to behave a certain way gets one
made that way. Each is plain fastai (`vision_learner` on resnet18, saved with `learn.export`),
so it loads through the scorer's normal path; only its weights are chosen:

- the stem computes a few channels per pixel from the (unnormalised, 0..1) RGB input;
- every residual stage passes them on, the downsampling ones as a 2×2 mean, so the pooled
  embedding are (near) the image means of those channels, and where each came from stays in place
  for Grad-CAM;
- the head takes those means to hidden units (with ReLU) and the hidden units to the logits.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tests.support.imagegen import CLASS_COLOURS, labelled_set

if TYPE_CHECKING:
    from fastai.learner import Learner

# rows: a weight per RGB channel; the stem's kernels spread each over the pixels they cover
RGB = np.eye(3)


@dataclass(frozen=True)
class Design:
    """What a built learner computes.

    stem: (C, 3, 7, 7) kernels of the stem convolution (stride 2: taps 3 and 4 are pixels 2i and 2i+1);
    stem_bias: (C,) added before the stem's ReLU; hidden: (H, C + 1) weights on the C pooled means and a
    constant 1; logits: class name -> (H + 1,) weights on the hidden units and a constant 1.
    """

    stem: np.ndarray
    stem_bias: np.ndarray
    hidden: np.ndarray
    logits: dict[str, np.ndarray]


def pixel_kernel(weights: np.ndarray) -> np.ndarray:
    """Stem kernels (C, 3, 7, 7) that take the 2×2 mean of each pixel channel weighted by `weights` (C, 3)."""
    kernel = np.zeros((len(weights), 3, 7, 7))
    kernel[:, :, 3:5, 3:5] = np.asarray(weights, float)[:, :, None, None] / 4
    return kernel


def chroma(k: int) -> np.ndarray:
    """RGB weights of how far channel k stands above the mean of the other two (0 for any grey)."""
    return RGB[k] - (RGB.sum(axis=0) - RGB[k]) / 2


def build_learner(out: Path, design: Design, size: int = 32, method: str = "crop",
                  names: dict[str, str] | None = None, only: tuple[str, ...] = tuple(CLASS_COLOURS)) -> Path:
    """A resnet18 vision_learner for the classes Low, Neutral and High (or their `names`; `only` some of them),
    computing `design`, exported to `out`."""
    names = names or {name: name for name in CLASS_COLOURS}
    classes = {names[name]: colour for name, colour in CLASS_COLOURS.items() if name in only}
    from fastai.vision.all import ImageDataLoaders, Normalize, Resize, resnet18, vision_learner

    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as data:
        warnings.simplefilter("ignore")
        items = labelled_set(Path(data), per_class=2, classes=classes)  # only to give the learner its classes
        dls = ImageDataLoaders.from_lists(data, [p for p, _ in items], [c for _, c in items], valid_pct=0.25,
                                          seed=0, item_tfms=Resize(size, method=method), bs=2, num_workers=0)
        learn = vision_learner(dls, resnet18, pretrained=False)
        # the design reads pixels in 0..1: fastai normalises only for pretrained weights
        assert not any(isinstance(t, Normalize) for t in learn.dls.after_batch.fs)
        set_design(learn, design, names)
        learn.export(out)
    os.chmod(out, 0o644)
    return out


def set_design(learn: Learner, design: Design, names: dict[str, str] | None = None) -> None:
    """Give a fastai vision_learner (resnet18, classes Low/Neutral/High or their `names`) the weights of `design`."""
    names = names or {name: name for name in CLASS_COLOURS}
    with torch.no_grad():
        _set_body(learn.model[0], design)
        _set_head(learn.model[1], design, list(learn.dls.vocab), names)


def _identity_norms(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            torch.nn.init.zeros_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.weight.fill_(1.0)
            module.bias.zero_()
            module.running_mean.zero_()
            module.running_var.fill_(1.0 - module.eps)  # divides by exactly 1


def _set_body(body: torch.nn.Sequential, design: Design) -> None:
    _identity_norms(body)
    conv, norm = body[0], body[1]
    channels = len(design.stem)
    conv.weight[:channels] = torch.tensor(design.stem, dtype=torch.float32)
    norm.bias[:channels] = torch.tensor(design.stem_bias, dtype=torch.float32)
    # with every convolution zero, a stage's blocks add nothing to their shortcut: each passes its input on.
    # A downsampling block's shortcut is zero instead, and its branch takes the 2×2 mean (padding 1 puts
    # pixel 2i at tap 1) and passes it through its second convolution's centre tap.
    for stage in body[4:]:
        block = stage[0]
        if block.downsample is not None:
            for c in range(channels):
                block.conv1.weight[c, c, 1:, 1:] = 0.25
                block.conv2.weight[c, c, 1, 1] = 1.0


def _set_head(head: torch.nn.Sequential, design: Design, vocab: list[str], names: dict[str, str]) -> None:
    _identity_norms(head)
    norms = [m for m in head if isinstance(m, torch.nn.BatchNorm1d)]
    linears = [m for m in head if isinstance(m, torch.nn.Linear)]
    assert len(norms) == len(linears) == 2, "fastai's default head: BN, Linear, ReLU, BN, Linear"
    embedding, hidden_units = linears[0].in_features, linears[0].out_features
    # the last feature and the last hidden unit are unused by the body: their norm's bias makes each a constant 1
    norms[0].bias[embedding - 1] = 1.0
    norms[1].bias[hidden_units - 1] = 1.0
    mean = embedding // 2  # AdaptiveConcatPool2d: the maxima first, then the means
    channels, hidden = design.stem.shape[0], torch.tensor(design.hidden, dtype=torch.float32)
    linears[0].weight[: len(hidden), mean : mean + channels] = hidden[:, :channels]
    linears[0].weight[: len(hidden), embedding - 1] = hidden[:, channels]
    for name, weights in design.logits.items():
        if names[name] not in vocab:  # a learner built with only some of the classes
            continue
        row = torch.tensor(weights, dtype=torch.float32)
        linears[1].weight[vocab.index(names[name]), : len(row) - 1] = row[:-1]
        linears[1].weight[vocab.index(names[name]), hidden_units - 1] = row[-1]


def colour_design(threshold: float = 0.2, gain: float = 64.0, grey_bias: float = 12.0) -> Design:
    """Blue -> Low, green -> Neutral, red -> High, by how far the image's mean colour leans to that channel
    beyond `threshold`; an image with no such lean (greys, photos of every colour) is Neutral. Each answer is
    confident (margins of about 12 and more on the test colours), without probabilities of exactly 0 or 1.

    Channels: the mean R, G and B, then each chroma's positive and its negative part, whose difference
    is the chroma of the image's mean colour.
    """
    weights = np.concatenate([RGB, [chroma(k) for k in range(3)], [-chroma(k) for k in range(3)]])
    hidden = np.zeros((3, 10))
    for k in range(3):  # relu(chroma of the mean colour - threshold), one unit per channel
        hidden[k, 3 + k], hidden[k, 6 + k], hidden[k, 9] = 1.0, -1.0, -threshold
    red, green, blue = (gain * np.eye(4)[k] for k in range(3))
    return Design(pixel_kernel(weights), np.zeros(9), hidden,
                  {"Low": blue, "Neutral": green + [0, 0, 0, grey_bias], "High": red})


def patch_design(threshold: float = 0.3, gain: float = 400.0) -> Design:
    """Only pixels whose colour leans to one channel by more than `threshold` count (grey noise never does):
    each class's logit is `gain` times the mean of its channel's excess, so a blue, green or red patch of a
    tenth of the image decides Low, Neutral or High, and without one the three classes tie."""
    hidden = np.concatenate([np.eye(3), np.zeros((3, 1))], axis=1)
    red, green, blue = (gain * np.eye(4)[k] for k in range(3))
    return Design(pixel_kernel([chroma(k) for k in range(3)]), np.full(3, -threshold), hidden,
                  {"Low": blue, "Neutral": green, "High": red})


def detail_design(gain: float = 30.0, offset: float = 3.0) -> Design:
    """Answers that follow fine detail: the mean absolute Laplacian of the brightness (3×3, centred on
    pixel 2i) moves the logit of Neutral up and High down by `gain` per unit from `offset` / `gain` (0.1, about
    where photo-like images and the tests' stripes lie), so that decoding which blurs or aliases the detail
    differently, or int8's rounding of it, moves the probabilities."""
    laplacian = np.full((3, 3), -1 / 8)
    laplacian[1, 1] = 1.0
    stem = np.zeros((2, 3, 7, 7))
    for sign, channel in ((1.0, 0), (-1.0, 1)):
        stem[channel, :, 2:5, 2:5] = sign * laplacian / 3
    hidden = np.array([[1.0, 1.0, 0.0]])  # the positive and the negative part: the mean absolute value
    return Design(stem, np.zeros(2), hidden, {"Low": np.zeros(2), "Neutral": np.array([gain, -offset]),
                                              "High": np.array([-gain, offset])})
