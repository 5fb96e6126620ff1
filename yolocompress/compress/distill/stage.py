"""The distillation stage: fine-tune (or train) a student under a teacher.

``distill_model(student, teacher, data, DistillConfig(method="feature"), FinetuneConfig(epochs=20, imgsz=256))``
returns ``(student, StageReport)``. ``method``: ``output`` (the teacher's head outputs as soft targets,
:class:`~yolocompress.compress.distill.output.OutputDistillation`), ``feature`` (channel-wise distillation
of the neck outputs with connectors where channel counts differ,
:class:`~yolocompress.compress.distill.feature.FeatureDistillation`) or ``both``. Before training it checks
what would silently make the teacher useless (output KD with other classes, anchors or strides is an error;
a teacher that is not better than the student on the val split is a warning); after training it warns when
a KD term ended under 1% or over 100x of the detection loss (its weight is probably wrong). Every term is
logged per epoch (``results.csv``: ``train/kd_output``, ``train/kd_feature``) and in the report.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolocompress.compress.distill.feature import FeatureDistillation
from yolocompress.compress.distill.output import OutputDistillation
from yolocompress.compress.finetune import FinetuneConfig, finetune
from yolocompress.compress.stage import StageReport, config_dict
from yolocompress.errors import InputError
from yolocompress.progress import ProgressCallback

METHODS = ("output", "feature", "both")
# A KD term below this share of the detection loss hardly trains anything; above the other it drowns it.
KD_SHARE_WARN = (0.01, 100.0)


@dataclass(frozen=True)
class DistillConfig:
    """What to distill (the training itself is a :class:`~yolocompress.compress.finetune.FinetuneConfig`).

    Attributes:
        method: ``output``, ``feature`` or ``both``.
        feature_layers: layer indices for feature KD (``None``: the layers that feed Detect).
        weight: weight of output KD (``method`` output or both).
        feature_weight: weight of feature KD (``method`` feature or both).
        temperature: CWD softmax temperature.
        check_teacher: evaluate teacher and student on the val split first and warn when the teacher is
            not better.
    """

    method: str = "feature"
    feature_layers: tuple[int, ...] | None = None
    weight: float = 1.0
    feature_weight: float = 1.0
    temperature: float = 1.0
    check_teacher: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not self.weight >= 0 or not self.feature_weight >= 0:
            raise InputError(f"weights must be >= 0, got {self.weight} and {self.feature_weight}")
        if not self.temperature > 0:
            raise InputError(f"temperature must be > 0, got {self.temperature}")
        if self.feature_layers is not None:
            object.__setattr__(self, "feature_layers", tuple(int(i) for i in self.feature_layers))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["feature_layers"] = None if self.feature_layers is None else list(self.feature_layers)
        return d


def check_output_compatible(student: nn.Module, teacher: nn.Module) -> None:
    """Output KD compares head outputs cell by cell: classes, anchors and strides must be the same."""
    s, t = student.model[-1], teacher.model[-1]
    if int(student.nc) != int(teacher.nc):
        raise InputError(f"output distillation needs the same classes: the student predicts {student.nc}, the "
                         f"teacher {teacher.nc}")
    if not torch.equal(s.stride.cpu(), t.stride.cpu()) or tuple(s.anchors.shape) != tuple(t.anchors.shape) or \
            not torch.allclose(s.anchors.cpu(), t.anchors.cpu()):
        raise InputError("output distillation needs the same anchors and strides in student and teacher "
                         f"(strides {s.stride.tolist()} vs {t.stride.tolist()}); use --method feature")


def _kd_warnings(history: list[dict[str, Any]]) -> list[str]:
    """Warnings when a KD term of the first epoch is tiny or huge against the detection loss."""
    if not history:
        return []
    row = history[0]
    det = sum(float(row.get(f"train/{k}_loss", 0.0)) for k in ("box", "obj", "cls"))
    out = []
    for key in ("kd_output", "kd_feature"):
        value = row.get(f"train/{key}")
        if value is None or det <= 0:
            continue
        share = float(value) / det
        if share < KD_SHARE_WARN[0]:
            out.append(f"{key} was {100 * share:.2g}% of the detection loss in epoch 1: at this weight the teacher "
                       "has almost no effect (raise the weight)")
        elif share > KD_SHARE_WARN[1]:
            out.append(f"{key} was {share:.0f}x the detection loss in epoch 1: it drowns the labels (lower the weight)")
    return out


def distill_model(student: nn.Module, teacher: nn.Module, data: Any, config: DistillConfig | None = None,
                  train: FinetuneConfig | None = None, out_dir: str | Path | None = None, resume: bool = False,
                  on_progress: ProgressCallback | None = None) -> tuple[nn.Module, StageReport]:
    """Train ``student`` (not modified) under ``teacher`` on ``data``; see the module docstring.

    ``train.imgsz`` must be set; ``train.distill`` is ignored (``config.weight`` is the output-KD weight).
    The returned student has no connector tensors (they belong to the loss term). ``details``: the
    fine-tune's (epochs, history with every KD term) plus ``method``, ``feature_layers``, ``connectors``
    (layer -> [student, teacher] channels) and, with ``check_teacher``, the val mAP50-95 of both.
    """
    from yolocompress.engine.evaluator import evaluate_model

    cfg = config or DistillConfig()
    train = dataclasses.replace(train or FinetuneConfig(), distill=0.0)
    if train.imgsz is None:
        raise InputError("distillation needs an image size (FinetuneConfig.imgsz)")
    t0 = time.perf_counter()
    terms: list[Any] = []
    details: dict[str, Any] = {"method": cfg.method}
    if cfg.method in ("output", "both"):
        check_output_compatible(student, teacher)
        terms.append(OutputDistillation(teacher, weight=cfg.weight))
    if cfg.method in ("feature", "both"):
        feature = FeatureDistillation(teacher, student, cfg.feature_layers, weight=cfg.feature_weight,
                                      tau=cfg.temperature, probe_size=int(train.imgsz))
        terms.append(feature)
        details["feature_layers"] = list(feature.feature_layers)
        details["connectors"] = {i: [int(m[0].in_channels), int(m[0].out_channels)]
                                 for i, m in feature.trainable.items()}
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
    warnings += _kd_warnings(report.details.get("history", []))
    if cfg.check_teacher and report.before is not None:  # the student's score before: no second evaluation
        report = report.replace(before=dataclasses.replace(report.before, map50_95=scores["student"]))
    return tuned, report.replace(stage="distill", config={**config_dict(cfg), **config_dict(train)},
                                 details={**report.details, **details}, warnings=(*report.warnings, *warnings),
                                 seconds=time.perf_counter() - t0)


__all__ = ["DistillConfig", "METHODS", "check_output_compatible", "distill_model"]
