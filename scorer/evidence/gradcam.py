"""Where the model looked: Grad-CAM heat maps for the predicted class, as overlay thumbnails. The only grad-cam import.

Grad-CAM costs a forward and a backward pass of the PyTorch model per creative, on top of
scoring's own forward pass, so `report.explain: auto` runs it only for small batches.

Two choices, both measured on learners for which only a small patch carries the class colour
(tests/test_explain.py): the map weighs the body's first two stages, not its last, where every
unit sees the whole creative; and it keeps the magnitude of each place's gradient-weighted
activation, not only its positive part. On learners trained briefly from scratch, the gradient's
local sign at a place is unreliable (the map of the class's own patch came out negative, so plain
Grad-CAM showed nothing), while its magnitude marks where the prediction is sensitive. The target is
the predicted class's margin over the runner-up: what made it this class rather than the next.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image


def cam_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers whose activations Grad-CAM weighs, in a model shaped as vision_learner builds it: the body's
    first two stages (a resnet's layer1 and layer2, at 1/4 and 1/8 of the input), where a small region that
    carries the class still has a place of its own; the last block but one when the body is shorter; else the body."""
    body = model[0]  # type: ignore[index]
    if not isinstance(body, torch.nn.Sequential) or len(body) <= 2:
        return [body]
    if len(body) >= 6:  # a stem, then four stages (resnet, xresnet): the first two stages
        return [body[-4], body[-3]]
    return [body[-2]]


class _MagnitudeGradCAM(GradCAM):  # type: ignore[misc]
    """Grad-CAM whose map keeps each place's magnitude, whatever the sign of its weighted activation."""

    def get_cam_image(self, *args: object, **kwargs: object) -> np.ndarray:
        weighted: np.ndarray = super().get_cam_image(*args, **kwargs)
        magnitude: np.ndarray = np.abs(weighted)
        return magnitude


class _Margin:
    """A Grad-CAM target: the class's logit less the largest other logit."""

    def __init__(self, category: int) -> None:
        self.category = category

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        logits = output if output.ndim == 1 else output[0]
        others = torch.cat([logits[:self.category], logits[self.category + 1:]])
        return logits[self.category] - others.max() if len(others) else logits[self.category]


class Explainer:
    """Grad-CAM on the learner's PyTorch model, at the body's first two stages, for the predicted class."""

    def __init__(self, model: torch.nn.Module, prepare: Callable[[np.ndarray], np.ndarray], threads: int,
                 thumb_px: int) -> None:
        self._model = model.eval()
        self._layers = cam_layers(model)
        # Gradients are needed from the output back to the layers' activations only: nothing before the
        # layers, and no weight gradients but the layers' own (which keep their output in the graph), are computed.
        for param in model.parameters():
            param.requires_grad_(False)
        for layer in self._layers:
            for param in layer.parameters():
                param.requires_grad_(True)
        self._prepare = prepare
        self._threads = threads
        self._thumb_px = thumb_px

    def heatmaps(self, pixels: np.ndarray, classes: Sequence[int] | None = None) -> np.ndarray:
        """Grad-CAM maps (N, H, W) in [0, 1] for uint8 pixels (N, H, W, 3), for each image's class: the one
        given (scoring's prediction), else the one this model predicts."""
        param = next(self._model.parameters())
        x = torch.from_numpy(self._prepare(pixels)).to(param.device, param.dtype)
        # ONNX scoring leaves PyTorch one thread; the backward pass deserves them all while it runs.
        previous = torch.get_num_threads()
        torch.set_num_threads(self._threads)
        try:
            with warnings.catch_warnings(), _MagnitudeGradCAM(model=self._model, target_layers=self._layers) as cam:
                warnings.simplefilter("ignore")
                if classes is None:
                    with torch.no_grad():
                        classes = self._model(x).argmax(dim=1).tolist()
                maps: np.ndarray = cam(input_tensor=x, targets=[_Margin(int(c)) for c in classes])
        finally:
            torch.set_num_threads(previous)
        return maps

    def overlays(self, pixels: np.ndarray, classes: Sequence[int] | None = None) -> list[bytes]:
        """One JPEG thumbnail per image: the heat map for its class laid over the pixels the model saw."""
        result = []
        for image, heat in zip(pixels, self.heatmaps(pixels, classes), strict=True):
            if heat.shape != image.shape[:2]:  # batch transforms that resize: the map is at the model's input size
                resized = Image.fromarray(heat.astype(np.float32), "F")
                heat = np.asarray(resized.resize(image.shape[1::-1], Image.Resampling.BILINEAR))
            blended = show_cam_on_image(image.astype(np.float32) / 255.0, heat, use_rgb=True, image_weight=0.55)
            im = Image.fromarray(blended)
            # As large as the creative's thumbnail, whether the model's input is smaller or larger.
            scale = self._thumb_px / max(im.size)
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                           Image.Resampling.BILINEAR)
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=85)
            result.append(buf.getvalue())
        return result

