"""The PyTorch side of running a learner: its forward pass with embedding, the PyTorch runtime
(CUDA, or the CPU when ONNX Runtime cannot take the model) and the ONNX export, checked against PyTorch.

With model/learner.py and evidence/gradcam.py, the only modules that import torch; scoring imports this
one only when it opens the learner itself, not when it opens a kept export (scoring/loading.py).
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from scorer.errors import ModelError
from scorer.fsutil import atomic_write, read_regular, sha256_bytes
from scorer.model.runtime import EXPORT_TOLERANCE, OnnxRuntime, Outputs, open_kept_onnx

log = logging.getLogger(__name__)


class WithEmbedding(torch.nn.Module):
    """A vision_learner model that returns (logits, embedding) from one forward pass."""

    def __init__(self, model: torch.nn.Sequential) -> None:
        super().__init__()
        head = model[1]
        assert isinstance(head, torch.nn.Sequential)
        self.body, self.pool, self.rest = model[0], head[0], head[1:]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.pool(self.body(x))
        return self.rest(pooled), pooled.flatten(1)


def with_embedding(model: torch.nn.Module) -> WithEmbedding | None:
    """Wrap a model shaped as fastai's vision_learner builds it (body, then a head opening with a pooling
    layer); None for any other shape, which then scores without evidence."""
    if not (isinstance(model, torch.nn.Sequential) and len(model) == 2):
        return None
    head = model[1]
    if not (isinstance(head, torch.nn.Sequential) and len(head) > 1 and "pool" in type(head[0]).__name__.lower()):
        return None
    return WithEmbedding(model)


def set_threads(threads: int) -> None:
    """PyTorch's CPU thread count for this process."""
    torch.set_num_threads(threads)


class TorchRuntime:
    """Eager PyTorch, channels_last, optionally half precision on CUDA."""

    def __init__(self, model: torch.nn.Module, device: str, half: bool = False) -> None:
        self.device = device
        self._half = half and device == "cuda"
        self.name = f"torch-{device}" + ("-fp16" if self._half else "")
        model = model.eval().to(device).to(memory_format=torch.channels_last)
        self._model = model.half() if self._half else model

    def run(self, batch: np.ndarray) -> Outputs:
        """Run the model under inference_mode and bring the outputs back as float32."""
        x = torch.from_numpy(batch).to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        if self._half:
            x = x.half()
        with torch.inference_mode():
            out = self._model(x)
        if isinstance(out, tuple):
            return out[0].float().cpu().numpy(), out[1].float().cpu().numpy()
        return out.float().cpu().numpy(), None


def load_or_export_onnx(
    model: torch.nn.Module, sample: np.ndarray, path: Path, threads: int, pinned: str | None
) -> tuple[OnnxRuntime, str, np.ndarray]:
    """Open the ONNX export of a learner's model, or export it; return the runtime, the export's SHA-256 and
    PyTorch's logits on `sample`, which the export was checked against.

    The cached file is used only when its bytes match `pinned` (kept in the state folder, not beside
    the file) and its outputs match PyTorch's on the fixed `sample`; otherwise it is exported again.
    """
    with torch.inference_mode():
        out = model.eval()(torch.from_numpy(sample))
    expected = (out[0] if isinstance(out, tuple) else out).float().numpy()
    if pinned is not None and path.is_file():
        kept = open_kept_onnx(path, pinned, threads, sample, expected, against="PyTorch", otherwise="exporting again")
        if kept is not None:
            return kept, pinned, expected
    _export(model, torch.from_numpy(sample), path)
    data = read_regular(path)
    runtime = OnnxRuntime(data, threads)
    diff = float(np.abs(runtime.run(sample)[0] - expected).max())
    if diff > EXPORT_TOLERANCE:
        path.unlink()
        raise ModelError(f"the ONNX export differs from PyTorch by {diff:.2g}: set 'runtime: torch' in config.yaml")
    log.info("exported the model to ONNX (%s), max |logit diff| vs PyTorch %.2g", path, diff)
    runtime.export_diff = diff
    return runtime, sha256_bytes(data), expected


def _export(model: torch.nn.Module, sample: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: _export_to(model, sample, tmp))


def _export_to(model: torch.nn.Module, sample: torch.Tensor, tmp: Path) -> None:
    names = ["logits", "embedding"] if isinstance(model, WithEmbedding) else ["logits"]
    # The TorchScript exporter covers fastai's AdaptiveConcatPool2d on every torch release we
    # support (the torch.export one fails on aten.adaptive_max_pool2d before torch 2.14) and
    # takes a second instead of five; the newer exporter is the fallback once it is gone.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model.eval(), (sample,), str(tmp), input_names=["input"], output_names=names,
                dynamic_axes={"input": {0: "batch"}, **{name: {0: "batch"} for name in names}}, opset_version=17,
                dynamo=False,
            )
        except (TypeError, RuntimeError, NotImplementedError) as exc:
            log.info("TorchScript ONNX export unavailable (%s): using torch.export", exc)
            torch.onnx.export(
                model.eval(), (sample,), str(tmp), input_names=["input"], output_names=names,
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), dynamo=True,
                external_data=False, verbose=False,
            )
