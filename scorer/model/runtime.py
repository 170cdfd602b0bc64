"""Inference runtimes and what every room needs to know of them, without importing PyTorch.

Each runtime takes a float32 NCHW batch (numpy) that has already been through the learner's
batch transforms and returns raw model outputs (logits) and, for learners shaped as fastai's
vision_learner builds them, the embedding before the head, from the same forward pass.
ONNX Runtime on the CPU lives here; the PyTorch runtime and the ONNX export, which need torch,
live in model/torch_runtime.py, so a start that opens a kept export never imports torch.
"""

from __future__ import annotations

import glob
import logging
import sys
import time
from pathlib import Path
from typing import Protocol

import numpy as np

from scorer.errors import ConfigError
from scorer.memory import trim_heap
from scorer.model.integrity import PinMismatch, read_pinned

log = logging.getLogger(__name__)

# Largest |logit| difference between ONNX Runtime and PyTorch accepted at export and at each load.
EXPORT_TOLERANCE = 1e-3

# Device nodes without which no GPU can be seen (NVIDIA, AMD's ROCm, WSL): none there, no CUDA device to ask for.
_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia[0-9]*", "/dev/kfd", "/dev/dxg")


Outputs = tuple[np.ndarray, np.ndarray | None]


class Runtime(Protocol):
    """Runs the model on a prepared batch."""

    name: str
    device: str

    def run(self, batch: np.ndarray) -> Outputs:
        """Raw outputs (logits) and embedding (None when the model has none) for a float32 NCHW batch."""
        ...


def choose_device(requested: str) -> str:
    """Resolve `device: auto|cpu|cuda` against the hardware that is there."""
    if requested == "cpu":
        return "cpu"
    available = cuda_available()
    if requested == "cuda" and not available:
        raise ConfigError("device is 'cuda' but PyTorch sees no CUDA GPU: set 'device: auto' or 'device: cpu'")
    return "cuda" if requested == "cuda" or (requested == "auto" and available) else "cpu"


def cuda_available() -> bool:
    """Whether PyTorch sees a CUDA GPU. On Linux without a GPU device node the answer is no, and PyTorch (a
    second of start-up) is not imported to give it."""
    if sys.platform.startswith("linux") and "torch" not in sys.modules \
            and not any(glob.glob(pattern) for pattern in _GPU_NODES):
        return False
    import torch

    return bool(torch.cuda.is_available())


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
        trim_heap(collect=False)  # ONNX Runtime's own memory: no Python cycles hold it

    def run(self, batch: np.ndarray) -> Outputs:
        """Run the ONNX graph on the batch."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        assert self._session is not None, "the session was closed"
        outputs = self._session.run(None, {self._input: x})
        return outputs[0], (outputs[1] if len(outputs) > 1 else None)


def onnx_cache_path(model_path: Path, model_sha256: str, cache_dir: Path, embedding: bool) -> Path:
    """Where the ONNX copy of a learner lives: keyed by the learner's SHA-256 and whether it returns embedding.

    The `.embedding` variant has two outputs, so a single-output export from before is never reused for it.
    """
    return cache_dir / f"{model_path.stem}.{model_sha256[:16]}{'.embedding' if embedding else ''}.onnx"


def open_kept_onnx(path: Path, pinned: str, threads: int, sample: np.ndarray, expected: np.ndarray, *,
                   against: str, otherwise: str) -> OnnxRuntime | None:
    """Open a kept ONNX export when its bytes match `pinned` and its logits on the prepared `sample` are within
    the export tolerance of `expected` (from `against`); else None, with a warning that ends in `otherwise`."""
    try:
        data = read_pinned(path, pinned, f"ONNX cache {path}", otherwise)
    except PinMismatch as exc:
        log.warning("%s", exc)
        return None
    runtime = OnnxRuntime(data, threads)
    diff = float(np.abs(runtime.run(sample)[0] - expected).max())
    if not diff <= EXPORT_TOLERANCE:
        log.warning("ONNX cache %s differs from %s by %.2g: %s", path, against, diff, otherwise)
        return None
    runtime.export_diff = diff
    return runtime


def ms_per_image(runtime: Runtime, batch: np.ndarray) -> float:
    """Milliseconds per image for the runtime on this batch: the best of two timed runs after a warm-up."""
    runtime.run(batch)
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        runtime.run(batch)
        best = min(best, time.perf_counter() - started)
    return 1000 * best / len(batch)


def describe_export_check(runtime: object, *, recorded: bool = False) -> str:
    """The ONNX export check's figure, for the report's Model sheet; `recorded`: checked against the logits that
    PyTorch gave when the learner was first opened here (scorer.model.fast_start), not against PyTorch itself."""
    diff = getattr(runtime, "export_diff", None)
    if not isinstance(runtime, OnnxRuntime):
        return "not applicable: the model runs in PyTorch"
    if diff is None:
        return "checked at load (figure not recorded)"
    against = "PyTorch's recorded logits" if recorded else "PyTorch"
    return (f"max |logit diff| ONNX Runtime vs {against} {diff:.2g} on a fixed sample, checked at load "
            f"(limit {EXPORT_TOLERANCE:g})")
