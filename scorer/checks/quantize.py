"""int8 quantisation of an ONNX export, run in a child process: `python -m scorer.checks.quantize`.

The quantiser holds several copies of the model while it works (about five times its size),
and the allocator keeps much of that after it returns. In a child process it is all given back
when the child exits, so a long-running service stays at its usual size. Only onnx, ONNX
Runtime and numpy are imported here: not torch.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np

from scorer.child import Reaped

_TIMEOUT_S = 900


def quantize_int8(folder: Path, calibration: np.ndarray) -> bytes:
    """Static int8 (QDQ, per-channel weights) of `folder`/export.onnx; activation ranges from `calibration`.

    `calibration` is a float32 NCHW batch as the model takes it. The folder is a private temporary one.
    """
    np.save(folder / "calibration.npy", np.ascontiguousarray(calibration, dtype=np.float32))
    with Reaped([sys.executable, "-m", "scorer.checks.quantize", str(folder)], stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True) as child:
        try:
            out, err = child.communicate(timeout=_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            raise
    if child.returncode != 0:
        lines = (err or out).strip().splitlines() or [f"exit status {child.returncode}"]
        raise RuntimeError(lines[-1])
    return (folder / "int8.onnx").read_bytes()


def _quantize(folder: Path) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    calibration = np.load(folder / "calibration.npy")
    name = onnx.load(str(folder / "export.onnx"), load_external_data=False).graph.input[0].name

    class Batches(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self._batches = iter([{name: calibration[i:i + 2]} for i in range(0, len(calibration), 2)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._batches, None)

    # the quantiser logs a warning for each 1-d weight it keeps per-tensor (the head's BatchNorm1d)
    logging.disable(logging.WARNING)
    # with external data the quantiser's working copies of the weights stay on disk instead of in memory
    quantize_static(str(folder / "export.onnx"), str(folder / "external.onnx"), Batches(),
                    quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, use_external_data_format=True)
    onnx.save(onnx.load(str(folder / "external.onnx")), str(folder / "int8.onnx"))  # one self-contained file


if __name__ == "__main__":
    _quantize(Path(sys.argv[1]))
