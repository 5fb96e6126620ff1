"""Calibration of an int8 plan: the float range of every planned tensor, observed on training images.

:func:`calibration_images` takes letterboxed images evenly spread over the **training** split;
:func:`calibrate` runs them through ONNX Runtime's calibrators (MinMax / Percentile / Entropy, or our
:func:`mse_range` search over ORT's histograms); :func:`shared_ranges` merges the ranges over each
scale-sharing group of the :class:`~yolocompress.compress.quant.plan.QuantPlan`.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from yolocompress.compress.quant.plan import QuantPlan
from yolocompress.errors import CompressionError, InputError
from yolocompress.io.workdir import work_dir

CALIBRATION_METHODS = ("minmax", "percentile", "entropy", "mse")
# Images run through the calibration model per collect_data call: ORT keeps every intermediate tensor of
# a call in memory (about 100 MB per 640 px image for yolov5s), so calibration streams in chunks.
_CHUNK = 4
# ORT's own default for its KL (entropy) search; more bins cost quadratically more time.
ENTROPY_BINS = 128


def calibration_images(data_cfg: Any, imgsz: int, n: int, stride: int = 32) -> np.ndarray:
    """``n`` training images letterboxed square to ``imgsz``: float32 array [n, 3, imgsz, imgsz] in 0..1.

    Images are taken evenly spread over the training split (never the validation split); fewer are
    returned when the split is smaller. Raises ``InputError`` when the split has no image.
    """
    from yolocompress.data.config import as_data_config
    from yolocompress.data.loaders import build_eval_loader

    data = as_data_config(data_cfg)
    try:
        loader = build_eval_loader(data, "train", imgsz=imgsz, batch=1, stride=stride, rect=False)
    except InputError as exc:
        raise InputError(f"no calibration images: {exc}") from exc
    dataset = loader.dataset
    if len(dataset) == 0:
        raise InputError("no calibration images: the training split is empty")
    picks = np.unique(np.linspace(0, len(dataset) - 1, num=min(n, len(dataset))).round().astype(int))
    out = np.empty((len(picks), 3, imgsz, imgsz), np.float32)
    for k, i in enumerate(picks):
        img = dataset[int(i)][0]
        out[k] = img.numpy().astype(np.float32) / 255.0
    return out


class ImageReader:
    """An ORT ``CalibrationDataReader`` over an image array, one image per call (batch-1 graphs)."""

    def __init__(self, images: np.ndarray, input_name: str):
        self.images, self.input_name, self._next = images, input_name, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._next >= len(self.images):
            return None
        self._next += 1
        return {self.input_name: self.images[self._next - 1:self._next]}

    def __len__(self) -> int:
        return len(self.images)


def ort_reader(images: np.ndarray, input_name: str) -> ImageReader:
    """An :class:`ImageReader` that is also ORT's ``CalibrationDataReader`` (which ORT's calibrators and
    ``quantize_static`` require); onnxruntime is imported only here."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(ImageReader, CalibrationDataReader):
        pass

    return _Reader(images, input_name)


def mse_range(hist: np.ndarray, edges: np.ndarray, lo: float, hi: float, levels: int = 256,
              steps: int = 64) -> tuple[float, float]:
    """The clipping range ``[a, b]`` (``lo <= a <= 0 <= b <= hi``) minimising the expected squared error of
    uniform quantization with ``levels`` levels over a histogram (``hist[k]`` values in
    ``[edges[k], edges[k + 1])``): rounding noise ``step^2 / 12`` inside the range, ``(x - clip(x))^2``
    outside.
    """
    centres = (edges[:-1] + edges[1:]) / 2
    counts = hist.astype(np.float64)
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    fractions = np.linspace(1.0, 1.0 / steps, steps)
    a = lo * fractions  # candidate lower ends
    b = hi * fractions  # candidate upper ends
    best, best_err = (lo, hi), np.inf
    for ai in a if lo < 0 else [0.0]:
        step = (b - ai) / (levels - 1)  # [len(b)]
        clipped = np.clip(centres[None, :], ai, b[:, None])
        err = (counts[None, :] * (centres[None, :] - clipped) ** 2).sum(1) + counts.sum() * step ** 2 / 12
        k = int(np.argmin(err))
        if err[k] < best_err:
            best, best_err = (float(ai), float(b[k])), float(err[k])
    return best


def calibrate(model_path: str | os.PathLike, plan: QuantPlan, images: np.ndarray, method: str,
              percentile: float = 99.999, bins: int = 2048) -> dict[str, tuple[float, float]]:
    """Float ranges ``{tensor: (lo, hi)}`` of every planned tensor, as observed (not yet merged over the
    scale-sharing groups: see :func:`shared_ranges`)."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, create_calibrator

    ort_method = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
                  "entropy": CalibrationMethod.Entropy, "mse": CalibrationMethod.Percentile}[method]
    # MSE searches ORT's signed histograms, which its Percentile calibrator collects cheaply (its Entropy
    # calibrator computes a KL search per tensor that is quadratic in the bin count).
    extra = {"num_bins": bins if method != "entropy" else ENTROPY_BINS, "percentile": percentile,
             "symmetric": False}
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    with work_dir("yolocompress-calib-") as tmp, quiet_ort_prints():
        calibrator = create_calibrator(Path(model_path), list(plan.op_types),
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=ort_method, extra_options=extra)
        for start in range(0, len(images), _CHUNK):
            calibrator.collect_data(ort_reader(images[start:start + _CHUNK], input_name))
        result = calibrator.compute_data()
        histograms = getattr(getattr(calibrator, "collector", None), "histogram_dict", {}) or {}
    ranges: dict[str, tuple[float, float]] = {}
    for name in plan.tensors:
        if name not in result:
            continue
        lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in result[name].range_value)
        if name in histograms:
            hist, edges, seen_lo, seen_hi = histograms[name][:4]
            seen_lo, seen_hi = float(seen_lo), float(seen_hi)
            if method == "mse":
                lo, hi = mse_range(np.asarray(hist), np.asarray(edges, np.float64), seen_lo, seen_hi)
            # ORT's histogram methods give ranges symmetric about 0; never go beyond what was observed
            lo, hi = max(lo, min(seen_lo, 0.0)), min(hi, max(seen_hi, 0.0))
        ranges[name] = (lo, hi)
    missing = [t for t in plan.tensors if t not in ranges]
    if missing:
        raise CompressionError(f"calibration produced no range for {len(missing)} planned tensors "
                               f"({missing[0]}, ...)")
    return ranges


def shared_ranges(ranges: dict[str, tuple[float, float]], plan: QuantPlan) -> dict[str, tuple[float, float]]:
    """``ranges`` restricted to the plan's tensors, each scale-sharing group given the union of its ranges."""
    out = {t: ranges[t] for t in plan.tensors}
    for group in plan.shared:
        lo = min(out[t][0] for t in group)
        hi = max(out[t][1] for t in group)
        for t in group:
            out[t] = (lo, hi)
    return out


@contextlib.contextmanager
def quiet_ort_prints() -> Iterator[None]:
    """ORT's calibrators print progress lines to stdout; library code must not print."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        yield



__all__ = ["CALIBRATION_METHODS", "ENTROPY_BINS", "ImageReader", "calibrate", "calibration_images",
           "mse_range", "ort_reader", "quiet_ort_prints", "shared_ranges"]
