"""Where the model looked: Grad-CAM heat maps for the predicted class, as overlay thumbnails. The only grad-cam import.

Grad-CAM costs a forward and a backward pass of the PyTorch model per creative, on top of
scoring's own forward pass, so `report.explain: auto` runs it only for small batches.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image

from scorer.scoring.runtime import cam_layer


class Explainer:
    """Grad-CAM on the learner's PyTorch model, at the body's last block but one, for the predicted class."""

    def __init__(self, model: torch.nn.Module, prepare: Callable[[np.ndarray], np.ndarray], threads: int,
                 thumb_px: int) -> None:
        self._model = model.eval()
        self._layer = cam_layer(model)
        # Gradients are needed from the output back to the layer's activations only: nothing before the
        # layer, and no weight gradients but the layer's own (which keep its output in the graph), are computed.
        for param in model.parameters():
            param.requires_grad_(False)
        for param in self._layer.parameters():
            param.requires_grad_(True)
        self._prepare = prepare
        self._threads = threads
        self._thumb_px = thumb_px

    def heatmaps(self, pixels: np.ndarray) -> np.ndarray:
        """Grad-CAM maps (N, H, W) in [0, 1] for uint8 pixels (N, H, W, 3), for each image's predicted class."""
        param = next(self._model.parameters())
        x = torch.from_numpy(self._prepare(pixels)).to(param.device, param.dtype)
        # ONNX scoring leaves PyTorch one thread; the backward pass deserves them all while it runs.
        previous = torch.get_num_threads()
        torch.set_num_threads(self._threads)
        try:
            with warnings.catch_warnings(), GradCAM(model=self._model, target_layers=[self._layer]) as cam:
                warnings.simplefilter("ignore")
                maps: np.ndarray = cam(input_tensor=x, targets=None)
        finally:
            torch.set_num_threads(previous)
        return maps

    def overlays(self, pixels: np.ndarray) -> list[bytes]:
        """One JPEG thumbnail per image: the heat map laid over the pixels the model saw."""
        result = []
        for image, heat in zip(pixels, self.heatmaps(pixels), strict=True):
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

