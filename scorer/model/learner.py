"""Scoring's side of fastai: load an exported learner and read how it preprocesses.

With training/fit.py (which fits one) this is the only module that imports fastai, and with
model/runtime.py and evidence/gradcam.py the only ones that import torch, so the rest of the
scorer (and its decoding worker processes) stays light.
"""

from __future__ import annotations

import io
import logging
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from fastai.vision.all import (
    Learner,
    RandomResizedCrop,
    Resize,
    ResizeMethod,
    TensorImage,
    ToTensor,
    load_learner,
)

from scorer.decoding.decode import ItemGeometry
from scorer.errors import ModelError
from scorer.model.fast_start import Preprocessing, softmax
from scorer.model.unpickle import TolerantPickle

log = logging.getLogger(__name__)

#: Attribute that `scorer train` sets on the learner before exporting it.
CLASSES_ATTR = "engagement_classes"


def load(path: Path, data: bytes) -> Learner:
    """Unpickle a learner saved with `learn.export()` from its checked bytes, on the CPU, tolerating missing
    labelling functions. `path` only names it in messages: the file is not opened again."""
    tolerant = TolerantPickle()
    with warnings.catch_warnings():
        # Our own integrity check (pinned SHA-256) stands in for fastai's generic pickle warning.
        warnings.filterwarnings("ignore", message=".*load_learner.*")
        warnings.filterwarnings("ignore", category=UserWarning, module="fastai")
        try:
            learn = load_learner(io.BytesIO(data), cpu=True, pickle_module=tolerant)
        except ModelError:
            raise
        except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, KeyError, OSError) as exc:
            raise ModelError(
                f"{path} is not a learner saved with learn.export() ({type(exc).__name__}: {exc}): "
                "export it again with fastai"
            ) from None
    if not isinstance(learn, Learner):
        raise ModelError(f"{path} holds a {type(learn).__name__}, not a fastai Learner: save it with learn.export()")
    missing = tolerant.missing_names()
    learn.model.eval()
    _check_runs(learn, path, missing)
    if missing:
        log.info("ignored %s from the export: not needed for scoring", ", ".join(missing))
    return learn


def _check_runs(learn: Learner, path: Path, missing: list[str]) -> None:
    vocab = vocab_of(learn)
    probe = torch.zeros(1, 3, 64, 64)
    try:
        with torch.inference_mode():
            out = learn.model(probe)
    except Exception as exc:  # a model we cannot run: say what is missing, if anything is
        hint = f" it needs {', '.join(missing)}, which cannot be imported here" if missing else ""
        raise ModelError(f"the model in {path} does not run ({type(exc).__name__}: {exc});{hint}: "
                         "install the code it was trained with") from None
    if out.ndim != 2 or out.shape[1] != len(vocab):
        raise ModelError(f"the model in {path} gives {tuple(out.shape)} outputs for {len(vocab)} classes: "
                         "export a single-label image classifier")
    probs = _activation(learn)(out)
    if not torch.allclose(probs.sum(dim=1), torch.ones(1), atol=1e-4):
        raise ModelError(f"the learner in {path} is not a single-label classifier (its outputs don't sum to 1): "
                         "train it with CrossEntropyLossFlat")


def vocab_of(learn: Learner) -> list[str]:
    """The learner's class names, in the order of its outputs."""
    vocab = getattr(learn.dls, "vocab", None)
    if vocab is None or len(vocab) < 2 or isinstance(vocab[0], (list, tuple)):
        raise ModelError("the learner has no single list of classes: export an image classifier (CategoryBlock)")
    return [str(v) for v in vocab]


def saved_classes(learn: Learner) -> list[str] | None:
    """The low-to-high class order that `scorer train` saved in the learner, if any."""
    saved = getattr(learn, CLASSES_ATTR, None)
    return [str(c) for c in saved] if saved else None


def activation(learn: Learner) -> Callable[[np.ndarray], np.ndarray]:
    """Turn the model's raw outputs into probabilities, as fastai's get_preds does."""
    act = _activation(learn)

    def apply(logits: np.ndarray) -> np.ndarray:
        return np.asarray(act(torch.from_numpy(np.asarray(logits, dtype=np.float32))).numpy())

    return apply


def _activation(learn: Learner) -> Any:
    act = getattr(learn.loss_func, "activation", None)
    return act if callable(act) else (lambda x: torch.softmax(x, dim=1))


def item_spec(learn: Learner) -> ItemGeometry | None:
    """Describe the validation-time item transforms, or None when one is not understood."""
    spec: ItemGeometry | None = None
    for tfm in learn.dls.after_item.fs:
        if isinstance(tfm, ToTensor):
            continue
        if type(tfm) is Resize and spec is None:
            method = {ResizeMethod.Crop: "crop", ResizeMethod.Squish: "squish", ResizeMethod.Pad: "pad"}.get(tfm.method)
            if method is None or tfm.mode != 2:  # 2 is Pillow's BILINEAR
                _unknown(tfm)
                return None
            spec = ItemGeometry(method, (int(tfm.size[0]), int(tfm.size[1])), str(tfm.pad_mode))
        elif type(tfm) is RandomResizedCrop and spec is None and tfm.mode == 2:
            size = (int(tfm.size[0]), int(tfm.size[1]))
            xtra = int(np.ceil(max(size) * tfm.val_xtra / 8) * 8)
            spec = ItemGeometry("center", size, squish_to=(size[0] + xtra, size[1] + xtra))
        else:
            _unknown(tfm)
            return None
    if spec is None:
        log.warning("the learner has no Resize item transform: using fastai's own test_dl path")
    return spec


def _unknown(tfm: Any) -> None:
    log.warning("item transform %s is not one the fast engine knows: using fastai's own test_dl path",
                type(tfm).__name__)


def batch_transform(learn: Learner) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 pixels (N, H, W, 3) to the model's float32 NCHW input, through the validation-time batch transforms."""
    pipeline = learn.dls.valid.after_batch
    # fastai sets this only while a DataLoader iterates; 1 means validation, so augmentations stay off.
    pipeline.split_idx = 1

    def apply(pixels: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(pixels).permute(0, 3, 1, 2)
        return np.asarray(pipeline(TensorImage(batch)).as_subclass(torch.Tensor).float().numpy())

    return apply


def plain_preprocessing(learn: Learner, sample: np.ndarray) -> Preprocessing | None:
    """The validation batch transforms as numpy computes them (scorer.model.fast_start), when they are
    IntToFloatTensor then, optionally, Normalize over the channels, and give fastai's pixels on `sample`;
    None for any other pipeline, which stays in fastai."""
    steps = [t for t in learn.dls.valid.after_batch.fs if getattr(t, "split_idx", None) != 0]  # 0: training only
    names = [type(t).__name__ for t in steps]
    if names not in (["IntToFloatTensor"], ["IntToFloatTensor", "Normalize"]) or float(steps[0].div) <= 0:
        return None
    plain = Preprocessing(float(steps[0].div))
    if len(steps) == 2:
        mean, std = (getattr(steps[1], name) for name in ("mean", "std"))
        if tuple(steps[1].axes) != (0, 2, 3) or mean.numel() != 3 or std.numel() != 3:
            return None
        plain = Preprocessing(plain.div, tuple(mean.flatten().tolist()), tuple(std.flatten().tolist()))
    same = np.abs(plain.apply(sample) - batch_transform(learn)(sample)).max() <= 1e-6
    return plain if same else None


def is_softmax(learn: Learner) -> bool:
    """Whether the learner's activation is a softmax over the classes, which numpy then computes."""
    logits = np.random.default_rng(0).normal(0, 4, (8, len(vocab_of(learn)))).astype(np.float32)
    with torch.inference_mode():
        theirs = _activation(learn)(torch.from_numpy(logits)).float().numpy()
    return bool(theirs.shape == logits.shape and np.allclose(theirs, softmax(logits), rtol=0, atol=1e-6))


def predict_files(learn: Learner, files: list[Path], batch_size: int) -> np.ndarray:
    """fastai's own batched path, for learners whose transforms the fast engine doesn't know."""
    dl = learn.dls.test_dl(files, bs=batch_size, num_workers=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        probs, _ = learn.get_preds(dl=dl)
    return np.asarray(probs.numpy())
