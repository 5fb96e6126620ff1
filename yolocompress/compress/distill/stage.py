"""The distillation stage: fine-tune (or train) a student under a teacher.

``distill_model(student, teacher, data, DistillConfig(method="feature"), FinetuneConfig(epochs=20, imgsz=256))``
returns ``(student, StageReport)``. ``method``: ``output`` (the teacher's head outputs as soft targets,
:class:`~yolocompress.compress.distill.output.OutputDistillation`), ``feature`` (channel-wise distillation
of the neck outputs with connectors where channel counts differ,
:class:`~yolocompress.compress.distill.feature.FeatureDistillation`) or ``both``; the terms come from
:func:`~yolocompress.compress.distill.config.distill_terms`, as in every stage that distills. Before
training it checks what would silently make the teacher useless (output KD with other classes, anchors or
strides is an error; a teacher that is not better than the student on the val split is a warning); after
training (in ``finetune``) it warns when a KD term ended under 1% or over 100x of the detection loss (its
weight is probably wrong). Every term is
logged per epoch (``results.csv``: ``train/kd_output``, ``train/kd_feature``) and in the report.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from yolocompress.compress.distill.config import DistillConfig, distill_terms
from yolocompress.compress.stage import StageReport, config_dict
from yolocompress.errors import InputError
from yolocompress.progress import ProgressCallback

if TYPE_CHECKING:  # imported when called: finetune's config takes a DistillConfig from this package
    from yolocompress.compress.finetune import FinetuneConfig


def distill_model(student: nn.Module, teacher: nn.Module, data: Any, config: DistillConfig | None = None,
                  train: FinetuneConfig | None = None, out_dir: str | Path | None = None, resume: bool = False,
                  on_progress: ProgressCallback | None = None) -> tuple[nn.Module, StageReport]:
    """Train ``student`` (not modified) under ``teacher`` on ``data``; see the module docstring.

    ``train.imgsz`` must be set; ``train.distill`` is ignored (``config.weight`` is the output-KD weight).
    The returned student has no connector tensors (they belong to the loss term). ``details``: the
    fine-tune's (epochs, history with every KD term) plus ``method``, ``feature_layers``, ``connectors``
    (layer -> [student, teacher] channels) and, with ``check_teacher``, the val mAP50-95 of both.
    """
    from yolocompress.compress.finetune import FinetuneConfig, finetune
    from yolocompress.engine.evaluator import evaluate_model

    cfg = config or DistillConfig()
    train = dataclasses.replace(train or FinetuneConfig(), distill=0.0)
    if train.imgsz is None:
        raise InputError("distillation needs an image size (FinetuneConfig.imgsz)")
    t0 = time.perf_counter()
    terms, details = distill_terms(cfg, teacher, student, int(train.imgsz), train.seed)
    warnings: list[str] = []
    if cfg.check_teacher:
        scores = {who: float(evaluate_model(m, data, imgsz=int(train.imgsz)).map50_95)
                  for who, m in (("teacher", teacher), ("student", student))}
        details["val_map50_95"] = scores
        if scores["teacher"] <= scores["student"]:
            warnings.append(f"the teacher is not better than the student on the val split (mAP50-95 "
                            f"{scores['teacher']:.4f} vs {scores['student']:.4f}): distillation may not help")
    tuned, report = finetune(student, data, train, out_dir=out_dir, resume=resume, on_progress=on_progress,
                             extra_losses=terms)
    return tuned, report.replace(stage="distill", config={**config_dict(cfg), **config_dict(train)},
                                 details={**report.details, **details},
                                 warnings=(*warnings, *report.warnings), seconds=time.perf_counter() - t0)


__all__ = ["DistillConfig", "distill_model"]
