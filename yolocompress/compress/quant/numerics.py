"""The integer formats every part of the quant package agrees on (the bottom of its one-way import stack:
numerics -> graph -> head -> plan -> verify -> ptq -> qat / sensitivity).

int8 weights are symmetric in ``[-WMAX, WMAX]`` (what ``quantize_static`` gives conv weights); activations
are uint8, asymmetric, with ONNX Runtime's own scale and zero point for a float range.
"""
from __future__ import annotations

import numpy as np

WMAX = 127  # symmetric int8 weights in [-127, 127] (what quantize_static gives conv weights)
QMIN, QMAX = 0, 255  # uint8 activations


def ort_scale_zero_point(lo: float, hi: float) -> tuple[float, int]:
    """ONNX Runtime's uint8 asymmetric parameters for a float range (``quant_utils.compute_scale_zp``)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / (QMAX - QMIN) if hi > lo else 1.0
    zero_point = int(np.clip(round(QMIN - lo / scale), QMIN, QMAX))
    return float(np.float32(scale)), zero_point


def sqnr_db(signal_energy: float, noise_energy: float) -> float:
    """``10 log10(signal / noise)``; ``inf`` for a noiseless result."""
    return float("inf") if noise_energy == 0 else float(10 * np.log10(signal_energy / noise_energy))


__all__ = ["QMAX", "QMIN", "WMAX", "ort_scale_zero_point", "sqnr_db"]
