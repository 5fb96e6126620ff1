"""The latency of one model file on one backend, as ``yolocompress bench`` measures it, with a verdict on
how far the figure can be trusted.

Backends: ``torch`` (eager), ``torch-dnn`` (the deploy form: fused, with oneDNN conv+activation kernels,
:func:`~yolocompress.compress.onednn.accelerate_cpu`), ``onnxruntime``, and ``openvino`` / ``openvino-bf16``
(the ``openvino`` extra; fp32 or bf16 inference precision); for the last three a checkpoint is exported to a
temporary ONNX file first. An ``.onnx`` file runs on ONNX Runtime, a ``.pt`` checkpoint on ``torch`` unless
told otherwise; a checkpoint is measured at the image size it records (as ``eval`` and ``export`` do).

The verdict: ``spread`` = p90 / median of the timed runs. On a quiet machine it stays within ~10%; a
larger spread, a mean far from the median, or a load average showing other work competing for the cores
(checked before timing) make the figure one to re-measure, and say so.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yolocompress.errors import InputError
from yolocompress.export.openvino import ONNX_BACKENDS
from yolocompress.progress import ProgressCallback

if TYPE_CHECKING:
    from yolocompress.profile.latency import LatencyResult

BACKENDS = ("torch", "torch-dnn", *ONNX_BACKENDS)
# p90 / median up to STABLE_SPREAD: stable; up to NOISY_SPREAD: noisy; beyond: unstable.
STABLE_SPREAD = 1.10
NOISY_SPREAD = 1.25
# the mean this far above the median: a few slow outliers weigh on it
MEAN_GAP = 0.10


def default_backend(model: str | os.PathLike) -> str:
    """``onnxruntime`` for an ``.onnx`` file, else ``torch``."""
    return "onnxruntime" if Path(model).suffix.lower() == ".onnx" else "torch"


@dataclass(frozen=True)
class BenchResult:
    """A latency measurement and what the machine looked like: ``load_average`` (1 minute, before timing;
    ``None`` where the OS has none) and ``cpus`` (logical CPUs)."""

    latency: LatencyResult
    load_average: float | None
    cpus: int

    @property
    def spread(self) -> float:
        """p90 / median of the timed runs."""
        return self.latency.p90_ms / self.latency.median_ms if self.latency.median_ms > 0 else float("inf")

    @property
    def stability(self) -> str:
        """``stable``, ``noisy`` or ``unstable`` (from :attr:`spread`)."""
        if self.spread <= STABLE_SPREAD:
            return "stable"
        return "noisy" if self.spread <= NOISY_SPREAD else "unstable"

    @property
    def busy(self) -> bool:
        """Other work was competing for the cores: a load average above the cores this run leaves free."""
        if self.load_average is None:
            return False
        return self.load_average > max(0, self.cpus - self.latency.threads) + 0.5

    @property
    def warnings(self) -> tuple[str, ...]:
        lat, out = self.latency, []
        if self.stability != "stable":
            out.append(f"{self.stability} timings: p90 is {100 * (self.spread - 1):.0f}% above the median "
                       f"(stable: within {100 * (STABLE_SPREAD - 1):.0f}%); re-measure, or use more --runs")
        if lat.median_ms > 0 and lat.mean_ms > (1 + MEAN_GAP) * lat.median_ms:
            gap = 100 * (lat.mean_ms / lat.median_ms - 1)
            out.append(f"the mean ({lat.mean_ms:.2f} ms) is {gap:.0f}% above the median: a few slow runs; "
                       "quote the median")
        if self.busy:
            out.append(f"the machine looks busy: load average {self.load_average:.2f} on {self.cpus} CPUs "
                       f"with {lat.threads} threads measured; other work competes for the cores")
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return {**self.latency.to_dict(), "spread": self.spread, "stability": self.stability,
                "load_average": self.load_average, "cpus": self.cpus, "warnings": list(self.warnings)}


def _load_average() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (AttributeError, OSError):  # not on every OS
        return None


def benchmark(model: str | os.PathLike, backend: str | None = None, imgsz: int | None = None,
              threads: int = 2, runs: int = 50, warmup: int = 10, batch: int = 1,
              on_progress: ProgressCallback | None = None) -> BenchResult:
    """Measure the latency of the model file ``model`` on ``backend`` (``None``: :func:`default_backend`).

    ``imgsz``: the square input size (default: a checkpoint's recorded size; an ``.onnx`` file has its own,
    which ``imgsz`` must then match). Progress events (``timing``) come between the timed runs.
    """
    from yolocompress.io.checkpoint import load_model_with_info
    from yolocompress.profile.latency import (
        measure_openvino_latency, measure_ort_latency, measure_torch_latency,
    )

    def measure_onnx(onnx_path: Path) -> Any:
        if backend == "onnxruntime":
            return measure_ort_latency(onnx_path, **timing)
        return measure_openvino_latency(onnx_path, backend=backend, **timing)

    backend = backend or default_backend(model)
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    path = Path(model)
    timing = {"threads": threads, "warmup": warmup, "runs": runs, "batch": batch, "on_progress": on_progress}
    if path.suffix.lower() == ".onnx":
        if backend not in ONNX_BACKENDS:
            raise InputError(f"{path.name} is an ONNX model: it runs on --backend onnxruntime (the default "
                             f"for .onnx files) or {', '.join(ONNX_BACKENDS[1:])}, not {backend}")
        load = _load_average()
        result = measure_onnx(path)
        if imgsz is not None and result.imgsz != (imgsz, imgsz):
            raise InputError(f"{path.name} has a fixed input size {result.imgsz[0]}x{result.imgsz[1]}, "
                             f"not {imgsz}x{imgsz}")
        return BenchResult(result, load, os.cpu_count() or 1)
    net, info = load_model_with_info(path)
    imgsz = imgsz or info.imgsz
    if backend in ONNX_BACKENDS:
        from yolocompress.export.onnx import export_onnx

        with tempfile.TemporaryDirectory(prefix="yolocompress-bench-") as tmp:
            onnx_path = export_onnx(net, Path(tmp) / f"{path.stem}.onnx", imgsz=imgsz, batch=batch)
            load = _load_average()
            return BenchResult(measure_onnx(onnx_path), load, os.cpu_count() or 1)
    if backend == "torch-dnn":
        from yolocompress.compress.fuse import fuse, is_fused
        from yolocompress.compress.onednn import accelerate_cpu

        net = accelerate_cpu(net if is_fused(net) else fuse(net), inplace=True)
    load = _load_average()
    result = measure_torch_latency(net, imgsz, **timing)
    return BenchResult(replace(result, backend=backend), load, os.cpu_count() or 1)


__all__ = ["BACKENDS", "BenchResult", "benchmark", "default_backend"]
