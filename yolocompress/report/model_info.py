"""A plain-data summary of a model (what ``yolocompress info`` shows and writes as JSON)."""
from __future__ import annotations

from typing import Any

from yolocompress.models.yolo import DetectionModel
from yolocompress.profile.flops import flops_by_layer
from yolocompress.profile.params import count_params


def model_summary(model: DetectionModel, imgsz: int = 640, source: str = "") -> dict[str, Any]:
    """Params, GFLOPs at ``imgsz`` (2 x multiply-adds, as Ultralytics reports), classes, strides, layers."""
    params = count_params(model)
    per_layer = flops_by_layer(model, imgsz)
    layers = []
    for m, g in zip(model.model, per_layer):
        layers.append({"index": m.i, "from": m.f, "n": model.layer_specs[m.i].n, "module": m.type,
                       "params": sum(p.numel() for p in m.parameters()), "gflops": g})
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
        "fused": bool(model.yaml.get("fused", False)),
        "layers": layers,
    }
