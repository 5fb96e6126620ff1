"""Model cost measurements: parameter counts, FLOPs, and CPU latency (PyTorch eager, ONNX Runtime).

Names are imported on first use, so ``yolocompress.profile.cpu`` (standard library only) can be used by the
torch-free commands without importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it
_EXPORTS = {
    "LatencyResult": "yolocompress.profile.latency",
    "measure_ort_latency": "yolocompress.profile.latency",
    "measure_torch_latency": "yolocompress.profile.latency",
    "ParamCount": "yolocompress.profile.params",
    "count_params": "yolocompress.profile.params",
    "flops_by_layer": "yolocompress.profile.flops",
    "gflops": "yolocompress.profile.flops",
    "cpu_flags": "yolocompress.profile.cpu",
    "cpu_line": "yolocompress.profile.cpu",
    "cpu_name": "yolocompress.profile.cpu",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'yolocompress.profile' has no attribute {name!r}")
