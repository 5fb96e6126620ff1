"""A plain-data summary of a model (what ``yolocompress info`` shows and writes as JSON)."""
from __future__ import annotations

from typing import Any

from yolocompress.compress.fuse import fuse, is_fused
from yolocompress.models.shapes import num_params
from yolocompress.models.yolo import DetectionModel
from yolocompress.profile.flops import flops_by_layer, gflops
from yolocompress.profile.params import count_params


def model_summary(model: DetectionModel, imgsz: int = 640, source: str = "") -> dict[str, Any]:
    """Params, GFLOPs at ``imgsz`` (2 x multiply-adds, as Ultralytics reports), classes, strides, layers.

    ``params_fused`` / ``gflops_fused`` describe the deploy form (BatchNorm folded, RepConv merged; computed on a
    fused copy unless the model is fused already). GFLOPs count convolutions only, so folding BN leaves them
    unchanged and only merged RepConv branches lower them.
    """
    params = count_params(model)
    fused = is_fused(model)
    deploy = model if fused else fuse(model)
    per_layer = flops_by_layer(model, imgsz)
    layers = []
    for m, g in zip(model.model, per_layer):
        layers.append({"index": m.i, "from": m.f, "n": model.layer_specs[m.i].n, "module": m.type,
                       "params": num_params(m), "gflops": g})
    return {
        "source": source,
        "params": params.total,
        "params_nonzero": params.nonzero,
        "gflops": float(sum(per_layer)),
        "imgsz": int(imgsz),
        "nc": model.nc,
        "names": list(model.names),
        "strides": [float(s) for s in model.stride],
        "anchors_per_level": model.detect.na,
        "fused": fused,
        "params_fused": params.total if fused else count_params(deploy).total,
        "gflops_fused": float(sum(per_layer)) if fused else gflops(deploy, imgsz),
        "layers": layers,
    }
