"""ONNX Runtime session helpers shared by evaluation, benchmarking and quantization."""
from __future__ import annotations

import os
from pathlib import Path

from yolocompress.errors import InputError


def omp_threads() -> int | None:
    """``OMP_NUM_THREADS`` as a positive int, or ``None`` when it is unset or not one. PyTorch reads it at
    start-up; ONNX Runtime does not, so two 2-core jobs given one thread each would still oversubscribe."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def create_session(path: str | os.PathLike, threads: int | None = None, optimize: bool = True):
    """Open an ONNX model on the CPU execution provider.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op thread count (``None``: ``OMP_NUM_THREADS`` when it is set, as PyTorch does,
            else ONNX Runtime's default of one per physical core). Inter-op is fixed to 1 so latency
            figures are comparable between runs.
        optimize: apply ORT's full graph optimizations (what a deployment gets).
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model file not found: {path}")
    options = ort.SessionOptions()
    threads = threads if threads is not None else omp_threads()
    if threads is not None:
        options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types
        raise InputError(f"cannot open ONNX model {path}: {str(exc).splitlines()[0]}") from exc
