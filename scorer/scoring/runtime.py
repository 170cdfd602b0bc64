"""Inference runtimes: ONNX Runtime on CPU, PyTorch on CUDA or CPU.

Each runtime takes a float32 NCHW batch (numpy) that has already been through the learner's
batch transforms and returns raw model outputs (logits). With scorer.learner, the only
module that imports torch.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from scorer.errors import ConfigError, ModelError
from scorer.fsutil import atomic_write, sha256_file

log = logging.getLogger(__name__)

# Largest |logit| difference between ONNX Runtime and PyTorch accepted at export.
_EXPORT_TOLERANCE = 1e-3


class Runtime(Protocol):
    """Runs the model on a prepared batch."""

    name: str
    device: str

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs for a float32 NCHW batch."""
        ...


def choose_device(requested: str) -> str:
    """Resolve `device: auto|cpu|cuda` against the hardware that is there."""
    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise ConfigError("device is 'cuda' but PyTorch sees no CUDA GPU: set 'device: auto' or 'device: cpu'")
    return "cuda" if requested == "cuda" or (requested == "auto" and available) else "cpu"


def set_threads(threads: int) -> None:
    """PyTorch's CPU thread count for this process."""
    torch.set_num_threads(threads)


class TorchRuntime:
    """Eager PyTorch, channels_last, optionally half precision on CUDA."""

    def __init__(self, model: torch.nn.Module, device: str, half: bool = False) -> None:
        self.device = device
        self.name = f"torch-{device}" + ("-fp16" if half else "")
        self._half = half and device == "cuda"
        model = model.eval().to(device).to(memory_format=torch.channels_last)
        self._model = model.half() if self._half else model

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Run the model under inference_mode and bring the outputs back as float32."""
        x = torch.from_numpy(batch).to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        if self._half:
            x = x.half()
        with torch.inference_mode():
            out = self._model(x)
        result: np.ndarray = out.float().cpu().numpy()
        return result


class OnnxRuntime:
    """ONNX Runtime on the CPU, with an explicit thread count."""

    device = "cpu"
    export_diff: float | None = None  # max |logit diff| against PyTorch, measured when it was exported

    def __init__(self, onnx_path: Path, threads: int) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Without the arena, activation memory is returned after each batch instead of kept at its peak.
        options.enable_cpu_mem_arena = False
        # Spinning threads would steal the cores that the decoding workers need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.name = f"onnxruntime-{ort.__version__}"

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Run the ONNX graph on the batch."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        result: np.ndarray = self._session.run(None, {self._input: x})[0]
        return result


def onnx_cache_path(model_path: Path, model_sha256: str, cache_dir: Path) -> Path:
    """Where the ONNX copy of a learner lives: keyed by the learner's SHA-256."""
    return cache_dir / f"{model_path.stem}.{model_sha256[:16]}.onnx"


def load_or_export_onnx(
    model: torch.nn.Module, sample: np.ndarray, model_sha256: str, path: Path, threads: int
) -> OnnxRuntime:
    """Open the cached ONNX export of a learner's model, exporting and checking it first if needed."""
    meta_path = path.with_suffix(".json")
    if path.is_file() and meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if meta.get("learner_sha256") == model_sha256 and meta.get("onnx_sha256") == sha256_file(path):
            cached = OnnxRuntime(path, threads)
            cached.export_diff = meta.get("max_abs_logit_diff")
            return cached
        log.warning("ONNX cache %s does not match the learner: exporting again", path)
    _export(model, torch.from_numpy(sample), path)
    runtime = OnnxRuntime(path, threads)
    with torch.inference_mode():
        expected = model.eval()(torch.from_numpy(sample)).float().numpy()
    diff = float(np.abs(runtime.logits(sample) - expected).max())
    if diff > _EXPORT_TOLERANCE:
        path.unlink()
        raise ModelError(f"the ONNX export differs from PyTorch by {diff:.2g}: set 'runtime: torch' in config.yaml")
    meta = {"learner_sha256": model_sha256, "onnx_sha256": sha256_file(path), "max_abs_logit_diff": diff}
    atomic_write(meta_path, json.dumps(meta, indent=2))
    log.info("exported the model to ONNX (%s), max |logit diff| vs PyTorch %.2g", path, diff)
    runtime.export_diff = diff
    return runtime


def describe_export_check(runtime: object) -> str:
    """The ONNX export check's figure, for the report's Model sheet."""
    diff = getattr(runtime, "export_diff", None)
    if not isinstance(runtime, OnnxRuntime):
        return "not applicable: the model runs in PyTorch"
    if diff is None:
        return "checked at export (figure not recorded)"
    return f"max |logit diff| ONNX Runtime vs PyTorch {diff:.2g} on the export sample (limit {_EXPORT_TOLERANCE:g})"


def _export(model: torch.nn.Module, sample: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: _export_to(model, sample, tmp))


def _export_to(model: torch.nn.Module, sample: torch.Tensor, tmp: Path) -> None:
    # The TorchScript exporter covers fastai's AdaptiveConcatPool2d on every torch release we
    # support (the torch.export one fails on aten.adaptive_max_pool2d before torch 2.14) and
    # takes a second instead of five; the newer exporter is the fallback once it is gone.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model.eval(), (sample,), str(tmp), input_names=["input"], output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
            )
        except (TypeError, RuntimeError, NotImplementedError) as exc:
            log.info("TorchScript ONNX export unavailable (%s): using torch.export", exc)
            torch.onnx.export(
                model.eval(), (sample,), str(tmp), input_names=["input"], output_names=["logits"],
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},), dynamo=True,
                external_data=False, verbose=False,
            )
