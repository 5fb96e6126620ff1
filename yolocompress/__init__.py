"""yolocompress: make trained YOLOv5-family detectors smaller and faster with a measured accuracy cost.

The library is usable without the CLI::

    from yolocompress import load_model, save_model, build_model
    model = load_model("yolov5s.pt")            # Ultralytics or our format, never unsafe unpickling
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use, so ``import yolocompress`` stays cheap)
_EXPORTS = {
    "DetectionModel": "yolocompress.models.yolo",
    "build_model": "yolocompress.models.yolo",
    "list_configs": "yolocompress.models.yolo",
    "load_model": "yolocompress.io.checkpoint",
    "load_model_with_info": "yolocompress.io.checkpoint",
    "save_model": "yolocompress.io.checkpoint",
    "model_summary": "yolocompress.report.model_info",
    "count_params": "yolocompress.profile.params",
    "gflops": "yolocompress.profile.flops",
    "measure_torch_latency": "yolocompress.profile.latency",
    "measure_ort_latency": "yolocompress.profile.latency",
    "export_onnx": "yolocompress.export.onnx",
    "evaluate": "yolocompress.engine.evaluator",
    "evaluate_model": "yolocompress.engine.evaluator",
    "load_data_config": "yolocompress.data",
    "synthesize_dataset": "yolocompress.data",
    "Trainer": "yolocompress.engine.trainer",
    "fuse": "yolocompress.compress.fuse",
    "accelerate_cpu": "yolocompress.compress.onednn",
    # the stage contract and the compression stages
    "StageReport": "yolocompress.compress.stage",
    "ModelSnapshot": "yolocompress.compress.stage",
    "fuse_stage": "yolocompress.compress.fuse",
    "finetune": "yolocompress.compress.finetune",
    "prune_model": "yolocompress.compress.prune",
    "quantize_ptq": "yolocompress.compress.quant",
    "quantize_qat": "yolocompress.compress.quant",
    "distill_model": "yolocompress.compress.distill",
    # their configs
    "FinetuneConfig": "yolocompress.compress.finetune",
    "PruneConfig": "yolocompress.compress.prune",
    "QuantConfig": "yolocompress.compress.quant",
    "QatConfig": "yolocompress.compress.quant",
    "DistillConfig": "yolocompress.compress.distill",
    # recipes and the CI gate
    "load_recipe": "yolocompress.recipe",
    "run_recipe": "yolocompress.recipe",
    "check_run": "yolocompress.recipe.check",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'yolocompress' has no attribute {name!r}")
