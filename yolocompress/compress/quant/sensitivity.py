"""Per-layer quantization sensitivity: the mAP each int8 convolution costs, and automatic exclusion.

For every convolution the plan puts in int8, the model is quantized with *only that convolution* kept float
(all else as planned, same calibration ranges) and evaluated; ``gain`` is its mAP50-95 minus the all-int8
model's, so the convolutions whose quantization hurts most rank first. Evaluation runs on labelled images
of the **training** split (like calibration): choosing what to exclude by validation mAP would make the
reported validation mAP optimistic.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from yolocompress.compress.quant.plan import build_plan
from yolocompress.compress.quant.ptq import CalibratedGraph, QuantConfig, build_int8, calibrated_graph
from yolocompress.errors import InputError
from yolocompress.io.workdir import work_dir


@dataclass(frozen=True)
class LayerSensitivity:
    """One convolution: module path, ONNX node name, multiply-adds, mAP50-95 with only it float, and the
    gain over the all-int8 model (mAP points x 100 are ``100 * gain``)."""

    scope: str
    name: str
    macs: int
    map50_95: float
    gain: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SensitivityResult:
    """Ranking (largest gain first) plus the reference mAP50-95 of the fp32 and the all-int8 models."""

    layers: list[LayerSensitivity]
    fp32_map50_95: float
    int8_map50_95: float
    images: int
    split: str

    def worst(self, k: int) -> list[LayerSensitivity]:
        """The ``k`` convolutions whose float version gains most (only those with a positive gain)."""
        return [layer for layer in self.layers[:k] if layer.gain > 0]

    def to_dict(self) -> dict[str, Any]:
        return {"layers": [layer.to_dict() for layer in self.layers], "fp32_map50_95": self.fp32_map50_95,
                "int8_map50_95": self.int8_map50_95, "images": self.images, "split": self.split}


def _eval_subset(path: Path, data_cfg: Any, split: str, images: int, imgsz: int) -> tuple[float, int]:
    """mAP50-95 of an ONNX file on up to ``images`` evenly spread images of ``split`` (square letterbox)."""
    from torch.utils.data import DataLoader, Subset

    from yolocompress.data.config import as_data_config
    from yolocompress.data.dataset import collate
    from yolocompress.data.loaders import build_eval_loader
    from yolocompress.engine.evaluator import evaluate
    from yolocompress.engine.predictors import OnnxPredictor

    data = as_data_config(data_cfg)
    dataset = build_eval_loader(data, split, imgsz=imgsz, batch=1, rect=False).dataset
    picks = np.unique(np.linspace(0, len(dataset) - 1, num=min(images, len(dataset))).round().astype(int))
    loader = DataLoader(Subset(dataset, picks.tolist()), batch_size=16, shuffle=False, collate_fn=collate)
    result = evaluate(OnnxPredictor(path), loader, data.nc, data.names)
    return result.map50_95, len(picks)


def layer_sensitivity(prepared: CalibratedGraph, data_cfg: Any, config: QuantConfig, folder: Path,
                      images: int = 128, split: str = "train",
                      layers: Sequence[str] | None = None) -> SensitivityResult:
    """Rank the planned int8 convolutions of ``prepared`` by the mAP50-95 gained when only that one is float.

    Args:
        prepared: from :func:`~yolocompress.compress.quant.ptq.calibrated_graph` (calibrated once, reused).
        images: evaluation images (evenly spread over ``split``).
        layers: restrict to these ONNX node names (default: every planned int8 conv).
        folder: scratch folder for the candidate models.
    """
    imgsz = prepared.imgsz[0]
    fp32_map, n = _eval_subset(prepared.fp32, data_cfg, split, images, imgsz)
    base_path = build_int8(prepared, prepared.plan, config, folder / "all-int8.onnx")
    int8_map, _ = _eval_subset(base_path, data_cfg, split, images, imgsz)
    convs = [c for c in prepared.plan.int8_convs if layers is None or c.name in layers]
    results = []
    for k, conv in enumerate(convs):
        plan = build_plan(prepared.pre, config.plan_config(exclude=(conv.name,)))
        path = build_int8(prepared, plan, config, folder / f"layer{k}.onnx")
        score, _ = _eval_subset(path, data_cfg, split, images, imgsz)
        results.append(LayerSensitivity(conv.scope, conv.name, conv.macs, score, score - int8_map))
        path.unlink()
    results.sort(key=lambda r: -r.gain)
    return SensitivityResult(results, fp32_map, int8_map, n, split)


def sensitivity(model_or_onnx: Any, data_cfg: Any, config: QuantConfig | None = None, images: int = 128,
                split: str = "train") -> SensitivityResult:
    """:func:`layer_sensitivity` from a model or file (calibrates first)."""
    config = config or QuantConfig()
    if config.autotune:
        raise InputError("sensitivity is measured on one plan: choose silu/stem int8 or float, not auto")
    if split == "val":
        raise InputError("sensitivity must not be measured on the validation split (it selects what to "
                         "exclude); use train")
    with work_dir("yolocompress-sens-") as tmp:
        prepared = calibrated_graph(model_or_onnx, data_cfg, config, Path(tmp))
        return layer_sensitivity(prepared, data_cfg, config, Path(tmp), images=images, split=split)


def auto_exclude(model_or_onnx: Any, data_cfg: Any, k: int, config: QuantConfig | None = None,
                 images: int = 128) -> tuple[QuantConfig, SensitivityResult]:
    """The config with the ``k`` most sensitive convolutions (positive gain only) added to ``exclude``."""
    if k < 1:
        raise InputError(f"auto-exclude needs k >= 1, got {k}")
    config = config or QuantConfig()
    report = sensitivity(model_or_onnx, data_cfg, config, images=images)
    names = tuple(layer.name for layer in report.worst(k))
    return QuantConfig(**{**asdict(config), "exclude": (*config.exclude, *names)}), report


__all__ = ["LayerSensitivity", "SensitivityResult", "auto_exclude", "layer_sensitivity", "sensitivity"]
