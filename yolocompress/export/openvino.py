"""OpenVINO: a second CPU runtime for the exported ONNX files (fp32, and our int8 QDQ files as they are).

Optional (``pip install 'yolocompress[openvino]'``): nothing else in the package needs it, and a command that
asks for it without it installed gets one error line. The module imports neither OpenVINO nor numpy at import
time: the command line reads its backend names before anything heavy is loaded. Two backends:

- ``openvino``: inference precision pinned to fp32. OpenVINO's default on CPUs with AVX-512 BF16 or AMX is
  bf16, which moved decoded boxes by up to 16 px against ONNX Runtime on one such Xeon; pinned, a fp32 file
  matches ONNX Runtime to float rounding.
- ``openvino-bf16``: the bf16 hint (fp32 activations of float layers computed in bf16 where the CPU has
  bf16 units; OpenVINO falls back to fp32 where it has none). Faster on AMX CPUs, at an accuracy cost that
  must be measured (``yolocompress eval --backend openvino-bf16``), never assumed.

:func:`compile_openvino` records the precision OpenVINO actually chose, so reports can print it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from yolocompress.errors import InputError

# backend name -> OpenVINO inference precision hint
OPENVINO_BACKENDS = {"openvino": "f32", "openvino-bf16": "bf16"}
# every runtime that runs an exported .onnx file
ONNX_BACKENDS = ("onnxruntime", *OPENVINO_BACKENDS)


def openvino_version() -> str | None:
    """The installed OpenVINO version, or ``None`` when it is not installed."""
    try:
        import openvino
    except ImportError:
        return None
    return str(openvino.__version__)


def _import_openvino():
    try:
        import openvino
    except ImportError:
        raise InputError("OpenVINO is not installed: pip install 'yolocompress[openvino]'") from None
    return openvino


@dataclass
class OpenVinoModel:
    """A compiled OpenVINO model with one infer request.

    Attributes:
        path: the ``.onnx`` file it was compiled from.
        input_name: its image input's name.
        input_shape: the input's dimensions, ``None`` where dynamic (``[B, C, H, W]``).
        input_dtype: numpy dtype the input takes.
        precision: the inference precision OpenVINO reports for the compiled model (``"f32"``, ``"bf16"``).
        threads: inference threads (``None``: OpenVINO's default).
    """

    path: Path
    input_name: str
    input_shape: tuple[int | None, ...]
    input_dtype: Any
    precision: str
    threads: int | None
    _request: Any

    def run(self, x: Any) -> Any:
        """The first output for ``x`` (numpy ``[B, C, H, W]``), as a numpy array owned by the caller."""
        import numpy as np

        result = self._request.infer({0: x})
        return np.array(result[0], copy=True)


def compile_openvino(path: str | os.PathLike, threads: int | None = None, backend: str = "openvino"
                     ) -> OpenVinoModel:
    """Compile an ONNX file for OpenVINO's CPU plugin, tuned for batch-1 latency (one stream).

    Args:
        path: the ``.onnx`` file (fp32, or an int8 QDQ file from ``yolocompress quantize``).
        threads: inference threads (``None``: OpenVINO's default).
        backend: ``"openvino"`` (fp32 inference precision) or ``"openvino-bf16"``.
    """
    if backend not in OPENVINO_BACKENDS:
        raise InputError(f"unknown OpenVINO backend {backend!r}; choose from {', '.join(OPENVINO_BACKENDS)}")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"ONNX model not found: {path}")
    ov = _import_openvino()
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": OPENVINO_BACKENDS[backend],
                              "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        compiled = ov.Core().compile_model(str(path), "CPU", config)
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with multi-line texts
        first = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        raise InputError(f"OpenVINO cannot compile {path}: {first}") from exc
    port = compiled.input(0)
    shape = port.get_partial_shape()
    dims = tuple(int(d.get_length()) if d.is_static else None for d in shape)
    import numpy as np

    dtype = np.float16 if "f16" in str(port.get_element_type()) else np.float32
    precision = _precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
    return OpenVinoModel(path, port.get_any_name(), dims, dtype, precision, threads,
                         compiled.create_infer_request())


def _precision_name(hint: Any) -> str:
    """``"f32"``/``"bf16"``/... from OpenVINO's element type (its str() differs between releases)."""
    text = str(getattr(hint, "get_type_name", lambda: hint)()).lower()
    for name, short in (("bfloat16", "bf16"), ("bf16", "bf16"), ("float32", "f32"), ("f32", "f32"),
                        ("float16", "f16"), ("f16", "f16")):
        if name in text:
            return short
    return text
