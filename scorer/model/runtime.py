"""Inference runtimes: ONNX Runtime on CPU, PyTorch on CUDA or CPU.

Each runtime takes a float32 NCHW batch (numpy) that has already been through the learner's
batch transforms and returns raw model outputs (logits) and, for learners shaped as fastai's
vision_learner builds them, the pooled features before the head, from the same forward pass.
With scorer.learner and scorer.evidence.gradcam, the only modules that import torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import time
import warnings
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from scorer.errors import ConfigError, ModelError
from scorer.fsutil import atomic_write, read_regular
from scorer.memory import trim_heap

log = logging.getLogger(__name__)

# Largest |logit| difference between ONNX Runtime and PyTorch accepted at export and at each load.
_EXPORT_TOLERANCE = 1e-3


Outputs = tuple[np.ndarray, np.ndarray | None]


class Runtime(Protocol):
    """Runs the model on a prepared batch."""

    name: str
    device: str

    def run(self, batch: np.ndarray) -> Outputs:
        """Raw outputs (logits) and pooled features (None when the model has none) for a float32 NCHW batch."""
        ...


class WithFeatures(torch.nn.Module):
    """A vision_learner model that returns (logits, pooled features) from one forward pass."""

    def __init__(self, model: torch.nn.Sequential) -> None:
        super().__init__()
        head = model[1]
        assert isinstance(head, torch.nn.Sequential)
        self.body, self.pool, self.rest = model[0], head[0], head[1:]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pooled = self.pool(self.body(x))
        return self.rest(pooled), pooled.flatten(1)


def with_features(model: torch.nn.Module) -> WithFeatures | None:
    """Wrap a model shaped as fastai's vision_learner builds it (body, then a head opening with a pooling
    layer); None for any other shape, which then scores without evidence."""
    if not (isinstance(model, torch.nn.Sequential) and len(model) == 2):
        return None
    head = model[1]
    if not (isinstance(head, torch.nn.Sequential) and len(head) > 1 and "pool" in type(head[0]).__name__.lower()):
        return None
    return WithFeatures(model)


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


class OnnxRuntime:
    """ONNX Runtime on the CPU, with an explicit thread count."""

    device = "cpu"
    export_diff: float | None = None  # max |logit diff| against PyTorch on the fixed sample, measured at load

    def __init__(self, onnx: bytes, threads: int, precision: str = "fp32") -> None:
        import onnxruntime as ort

        self._threads = threads
        self._session: ort.InferenceSession | None = None
        self.open(onnx)
        self.name = f"onnxruntime-{ort.__version__}" + ("" if precision == "fp32" else f" {precision}")

    def open(self, onnx: bytes) -> None:
        """Start a session on the graph's bytes (again, after `close`)."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Without the arena, activation memory is returned after each batch instead of kept at its peak.
        options.enable_cpu_mem_arena = False
        # Spinning threads would steal the cores that the decoding workers need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # From the bytes that were checked, not from the path: the file cannot be swapped in between.
        self._session = ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name

    def close(self) -> None:
        """Give the session's memory back, e.g. while the model is quantised beside it; `open` starts it again."""
        self._session = None
        trim_heap()

    def run(self, batch: np.ndarray) -> Outputs:
        """Run the ONNX graph on the batch."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        assert self._session is not None, "the session was closed"
        outputs = self._session.run(None, {self._input: x})
        return outputs[0], (outputs[1] if len(outputs) > 1 else None)


def onnx_cache_path(model_path: Path, model_sha256: str, cache_dir: Path, features: bool) -> Path:
    """Where the ONNX copy of a learner lives: keyed by the learner's SHA-256 and whether it returns features.

    The `.features` variant has two outputs, so a single-output export from before is never reused for it.
    """
    return cache_dir / f"{model_path.stem}.{model_sha256[:16]}{'.features' if features else ''}.onnx"


def load_or_export_onnx(
    model: torch.nn.Module, sample: np.ndarray, path: Path, threads: int, pinned: str | None
) -> tuple[OnnxRuntime, str]:
    """Open the ONNX export of a learner's model, or export it; return the runtime and the export's SHA-256.

    The cached file is used only when its bytes match `pinned` (kept in the state folder, not beside
    the file) and its outputs match PyTorch's on the fixed `sample`; otherwise it is exported again.
    """
    with torch.inference_mode():
        out = model.eval()(torch.from_numpy(sample))
    expected = (out[0] if isinstance(out, tuple) else out).float().numpy()
    if pinned is not None and path.is_file():
        data = read_regular(path)
        if hashlib.sha256(data).hexdigest() != pinned:
            log.warning("ONNX cache %s does not match its pin in the state folder: exporting again", path)
        else:
            runtime = OnnxRuntime(data, threads)
            diff = float(np.abs(runtime.run(sample)[0] - expected).max())
            if diff <= _EXPORT_TOLERANCE:
                runtime.export_diff = diff
                return runtime, pinned
            log.warning("ONNX cache %s differs from PyTorch by %.2g: exporting again", path, diff)
    _export(model, torch.from_numpy(sample), path)
    data = read_regular(path)
    runtime = OnnxRuntime(data, threads)
    diff = float(np.abs(runtime.run(sample)[0] - expected).max())
    if diff > _EXPORT_TOLERANCE:
        path.unlink()
        raise ModelError(f"the ONNX export differs from PyTorch by {diff:.2g}: set 'runtime: torch' in config.yaml")
    log.info("exported the model to ONNX (%s), max |logit diff| vs PyTorch %.2g", path, diff)
    runtime.export_diff = diff
    return runtime, hashlib.sha256(data).hexdigest()


def ms_per_image(runtime: Runtime, batch: np.ndarray) -> float:
    """Milliseconds per image for the runtime on this batch: the best of two timed runs after a warm-up."""
    runtime.run(batch)
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        runtime.run(batch)
        best = min(best, time.perf_counter() - started)
    return 1000 * best / len(batch)


def describe_export_check(runtime: object) -> str:
    """The ONNX export check's figure, for the report's Model sheet."""
    diff = getattr(runtime, "export_diff", None)
    if not isinstance(runtime, OnnxRuntime):
        return "not applicable: the model runs in PyTorch"
    if diff is None:
        return "checked at load (figure not recorded)"
    return (f"max |logit diff| ONNX Runtime vs PyTorch {diff:.2g} on a fixed sample, checked at load "
            f"(limit {_EXPORT_TOLERANCE:g})")


def _export(model: torch.nn.Module, sample: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: _export_to(model, sample, tmp))


def _export_to(model: torch.nn.Module, sample: torch.Tensor, tmp: Path) -> None:
    names = ["logits", "features"] if isinstance(model, WithFeatures) else ["logits"]
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
