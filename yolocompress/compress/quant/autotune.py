"""Pick the int8 plan that runs fastest on *this* CPU and runtime, within an accuracy bound.

Which plan is fastest depends on the CPU and the runtime, not only on the model. Measured
(benchmarks/RESULTS.md): ONNX Runtime runs SiLU as ``QLinearSigmoid + QLinearMul`` faster than a float SiLU
between Q/DQ on the AMD EPYC and the Intel Xeon seen so far, while OpenVINO runs the float-SiLU plan both
faster and closer to ONNX Runtime's accuracy; an int8 stem lost on both CPUs with ONNX Runtime.
``silu="auto"`` / ``stem="auto"`` in a
:class:`~yolocompress.compress.quant.ptq.QuantConfig` make PTQ build every candidate plan from one
calibration, measure each one's output SQNR against fp32, time them side by side on the target runtime, and
keep the fastest whose SQNR is within ``tolerance_db`` of the reference plan (the first candidate: the
defaults). The choice and every candidate's figures go into the report (``details["autotune"]``), with the
CPU model and ISA flags: the same file may be the wrong choice on another machine.

This module holds the timing and the decision; :func:`~yolocompress.compress.quant.ptq.quantize_ptq` builds
the candidates.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from yolocompress.errors import InputError
from yolocompress.export.openvino import ONNX_BACKENDS
from yolocompress.profile.cpu import cpu_flags, cpu_line, cpu_name

# A candidate must be at least this much faster (relative, medians) than the reference to replace it: timing
# noise on a shared machine must not flip the choice between two plans of equal speed.
MIN_GAIN = 0.02


@dataclass(frozen=True)
class PlanCandidate:
    """One candidate plan and what was measured of it.

    Attributes:
        silu, stem: the plan settings (:class:`~yolocompress.compress.quant.plan.PlanConfig`).
        sqnr_db, score_sqnr_db: int8 vs fp32 decoded output SQNR (all columns, score columns); ``None``:
            noiseless.
        median_ms, min_ms: batch-1 latency on the tuning backend, timed side by side with the others.
        float_prefix: leading layers kept float.
    """

    silu: str
    stem: str
    sqnr_db: float | None
    score_sqnr_db: float | None
    median_ms: float
    min_ms: float
    float_prefix: int = 0

    @property
    def label(self) -> str:
        prefix = f", float_prefix={self.float_prefix}" if self.float_prefix else ""
        return f"silu={self.silu}, stem={self.stem}{prefix}"


def _db(value: float | None) -> float:
    return float("inf") if value is None else float(value)


def choose_plan(candidates: Sequence[PlanCandidate], tolerance_db: float) -> tuple[int, str]:
    """Index of the chosen candidate and why.

    ``candidates[0]`` is the reference (the default plan). A candidate qualifies when both its SQNRs are at
    least the reference's minus ``tolerance_db``; the fastest qualifying one (median) wins if it is at least
    ``MIN_GAIN`` faster than the reference, else the reference stays.
    """
    if not candidates:
        raise ValueError("choose_plan needs at least one candidate")
    ref = candidates[0]
    floor = (_db(ref.sqnr_db) - tolerance_db, _db(ref.score_sqnr_db) - tolerance_db)
    qualified = [i for i, c in enumerate(candidates)
                 if _db(c.sqnr_db) >= floor[0] and _db(c.score_sqnr_db) >= floor[1]]
    best = min(qualified, key=lambda i: candidates[i].median_ms)
    rejected = [c.label for i, c in enumerate(candidates) if i not in qualified]
    note = f"; {', '.join(rejected)} lost more than {tolerance_db:g} dB SQNR" if rejected else ""
    if best == 0 or candidates[best].median_ms > (1 - MIN_GAIN) * ref.median_ms:
        return 0, (f"kept the default plan ({ref.label}, {ref.median_ms:.2f} ms): no qualifying candidate "
                   f"was {100 * MIN_GAIN:.0f}% faster{note}")
    c = candidates[best]
    return best, (f"{c.label}: {c.median_ms:.2f} ms vs {ref.median_ms:.2f} ms for the default plan "
                  f"({c.median_ms / ref.median_ms:.2f}x), SQNR {_db(c.sqnr_db):.1f} dB vs "
                  f"{_db(ref.sqnr_db):.1f}{note}")


def time_plans(files: Mapping[str, str | os.PathLike], imgsz: int, backend: str = "onnxruntime",
               threads: int = 2, runs: int = 20) -> dict[str, tuple[float, float]]:
    """Median and minimum ms per batch-1 call of each ONNX file on ``backend``, timed side by side in
    interleaved rounds (:func:`~yolocompress.profile.latency.interleaved_times`)."""
    from yolocompress.profile.latency import time_onnx_files

    if backend not in ONNX_BACKENDS:
        raise InputError(f"tune_backend must be one of {', '.join(ONNX_BACKENDS)}, got {backend!r}")
    times = time_onnx_files(files, imgsz, backend, threads, warmup=3, runs=runs,
                            rounds=max(1, min(5, runs // 4)))
    return {name: (float(np.median(t)), float(np.min(t))) for name, t in times.items()}


def autotune_details(candidates: Sequence[PlanCandidate], chosen: int, reason: str, backend: str,
                     threads: int) -> dict[str, Any]:
    """The ``details["autotune"]`` entry of the quantize report (the int8-vs-fp32 speed of the chosen plan
    is ``details["speed"]``: :func:`speed_details`)."""
    return {"backend": backend, "threads": threads, "cpu": cpu_name(), "cpu_flags": cpu_flags(),
            "chosen": {"silu": candidates[chosen].silu, "stem": candidates[chosen].stem,
                       "float_prefix": candidates[chosen].float_prefix}, "reason": reason,
            "candidates": [{**asdict(c), "chosen": i == chosen} for i, c in enumerate(candidates)]}


def speed_details(int8_ms: tuple[float, float], fp32_ms: tuple[float, float], backend: str,
                  threads: int) -> dict[str, Any]:
    """The ``details["speed"]`` entry of every quantize report: the written int8 file's batch-1 latency
    (median, minimum) against the fp32 file's, timed side by side on this machine, with the CPU model and ISA
    flags (the ratio differs between CPUs: benchmarks/RESULTS.md). ``int8_vs_fp32`` is the ratio of the
    medians, ``int8_vs_fp32_min`` of the minimums (the least disturbed calls)."""
    (int8_med, int8_min), (fp32_med, fp32_min) = int8_ms, fp32_ms
    return {"backend": backend, "threads": threads, "cpu": cpu_name(), "cpu_flags": cpu_flags(),
            "int8_median_ms": float(int8_med), "fp32_median_ms": float(fp32_med),
            "int8_min_ms": float(int8_min), "fp32_min_ms": float(fp32_min),
            "int8_vs_fp32": float(int8_med) / float(fp32_med),
            "int8_vs_fp32_min": float(int8_min) / float(fp32_min)}


def slower_than_fp32_warning(speed: Mapping[str, Any]) -> str | None:
    """A warning when the int8 file (``speed``: :func:`speed_details`) ran no faster than the fp32 file
    timed beside it (within ``MIN_GAIN``), else ``None``. Measured on an Intel Xeon with AMX
    (benchmarks/RESULTS.md): a latency-pruned yolov5n ran at 0.488 of the unpruned fp32 model in fp32 and
    0.543 in int8."""
    ratio = speed["int8_vs_fp32"]
    if ratio < 1.0 - MIN_GAIN:
        return None
    return (f"the int8 model runs at {ratio:.2f}x the fp32 model's latency on this CPU "
            f"({cpu_line(speed['cpu'], speed.get('cpu_flags'))}; {speed['backend']}, {speed['threads']} threads): "
            f"no faster; deploy the fp32 model here, or measure on the target CPU")


__all__ = ["MIN_GAIN", "PlanCandidate", "autotune_details", "choose_plan", "slower_than_fp32_warning",
           "speed_details", "time_plans"]
