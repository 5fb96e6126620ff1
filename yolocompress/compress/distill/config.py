"""What to distill (``DistillConfig``) and the one place that turns it into trainer loss terms.

Every stage that trains under a teacher takes the same choice: the ``distill`` stage, ``finetune``
(``FinetuneConfig.distill``), prune's own fine-tune (``PruneConfig.finetune.distill``) and QAT
(``QatConfig.distill``). Their ``distill`` field is either a plain weight ``W`` (output KD at that weight,
0: none; the older form, kept) or a :class:`DistillConfig`; :func:`as_distill_config` makes the two one,
and :func:`distill_terms` builds the ``extra_losses`` entries and the report's details from it, so the
checks (heads for output KD, layers and strides for feature KD) and the connectors are the same everywhere.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from yolocompress.compress.distill.feature import DEFAULT_TEMPERATURE, DEFAULT_WEIGHT, FeatureDistillation
from yolocompress.compress.distill.output import OutputDistillation
from yolocompress.compress.distill.teacher import TeacherForward
from yolocompress.engine.loss import Hyp, LossGains, loss_gains
from yolocompress.errors import InputError

METHODS = ("output", "feature", "both")
# A KD term below this share of the detection loss hardly trains anything; above the other it drowns it.
KD_SHARE_WARN = (0.01, 100.0)


# The method for a student trained from scratch (``distill yolov5n ...``), measured (``benchmarks/RESULTS.md``,
# "Distillation from a larger teacher"): yolov5n from scratch under a yolov5s teacher, 40 epochs, ended 7.9
# points above labels-only with output KD and 7.3 below it with feature KD; a pruned student is the other way
# round, hence ``DistillConfig.method``'s default "feature".
FROM_SCRATCH_METHOD = "output"


def default_method(from_scratch: bool, feature_settings: bool = False) -> str:
    """The distillation method to use when none is given: ``FROM_SCRATCH_METHOD`` for a student trained from
    scratch, else ``DistillConfig``'s default (a student derived from the teacher, e.g. pruned); ``"feature"``
    whenever feature-KD settings were given (they ask for it)."""
    if feature_settings:
        return "feature"
    return FROM_SCRATCH_METHOD if from_scratch else DistillConfig.method


@dataclass(frozen=True)
class DistillConfig:
    """What to distill (the training itself is the stage's own config).

    Attributes:
        method: ``output``, ``feature`` or ``both``.
        feature_layers: layer indices for feature KD (``None``: the layers that feed Detect).
        weight: weight of output KD (``method`` output or both), relative to the labels: its parts are
            weighted by the detection loss's own gains (:func:`output_gains`).
        feature_weight: weight of feature KD (``method`` feature or both), a plain multiplier of the CWD term.
            The default 0.01 is measured (``benchmarks/RESULTS.md``, "Distillation of the pruned student"):
            on the shipped baseline pruned at ratio 0.5 (256 px, 6 classes) feature KD at 0.005, 0.01 and 0.02
            ended within 0.05 points of each other and ~0.4 points above plain fine-tuning after 20 epochs,
            while 1 (the earlier default) collapsed the fine-tune: the connectors' BatchNorm (train mode)
            amplifies the CWD gradient ~12x (norm ~100 at weight 1 against the detection loss's ~8), past the
            trainer's gradient clip at 10, and the student then learns the connector's target, not the labels.
        temperature: CWD softmax temperature. The default 0.5 is measured on the same pruned student:
            +1.59 and +0.67 points over plain fine-tuning after 20 epochs (seeds 0, 1) against +0.40 and +0.39
            at 1; 4 lost 1.1 points against 1 (a sharper distribution per channel: where it peaks matters).
        check_teacher: (the ``distill`` stage) evaluate teacher and student on the val split first and warn
            when the teacher is not better. The other stages distill from the model they started from
            and do not evaluate it.
    """

    method: str = "feature"
    feature_layers: tuple[int, ...] | None = None
    weight: float = 1.0
    feature_weight: float = DEFAULT_WEIGHT
    temperature: float = DEFAULT_TEMPERATURE
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


def as_distill_config(value: float | DistillConfig | None) -> DistillConfig | None:
    """A stage's ``distill`` field as a :class:`DistillConfig`: a weight ``W > 0`` is output KD at ``W``
    (``None`` for 0 or ``None``: no distillation); a negative weight is an ``InputError``."""
    if value is None or isinstance(value, DistillConfig):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value) >= 0:
        raise InputError(f"distill must be a weight >= 0 or distillation settings, got {value!r}")
    return DistillConfig(method="output", weight=float(value), check_teacher=False) if value > 0 else None


def distill_json(value: float | DistillConfig | None) -> float | dict[str, Any] | None:
    """A ``distill`` field as JSON data (the weight, or the settings' dict)."""
    return value.to_dict() if isinstance(value, DistillConfig) else value


def check_output_compatible(student: nn.Module, teacher: nn.Module) -> None:
    """Output KD compares head outputs cell by cell: classes, anchors and strides must be the same."""
    s, t = student.model[-1], teacher.model[-1]
    if int(student.nc) != int(teacher.nc):
        raise InputError(f"output distillation needs the same classes: the student predicts {student.nc}, "
                         f"the teacher {teacher.nc}")
    same_anchors = tuple(s.anchors.shape) == tuple(t.anchors.shape) and torch.allclose(s.anchors.cpu(),
                                                                                        t.anchors.cpu())
    if not torch.equal(s.stride.cpu(), t.stride.cpu()) or not same_anchors:
        raise InputError("output distillation needs the same anchors and strides in student and teacher "
                         f"(strides {s.stride.tolist()} vs {t.stride.tolist()}); use method feature")


def output_gains(student: nn.Module, hyp: Hyp | None, imgsz: int | None) -> LossGains | None:
    """The gains output KD weighs its parts with: the detection loss's own (``loss_gains`` of ``hyp``,
    default YOLOv5's, at ``imgsz``), so that weight 1 weighs each part as the labels' part; ``None`` (unit
    gains) when the detection loss is off (all its gains 0: QAT distilling alone) or there is no size."""
    hyp = hyp or Hyp()
    if imgsz is None or hyp.box == hyp.obj == hyp.cls == 0:
        return None
    head = student.model[-1]
    return loss_gains(hyp, int(head.nl), int(head.nc), int(imgsz))


def distill_terms(config: DistillConfig, teacher: nn.Module, student: nn.Module, imgsz: int | None = None,
                  seed: int = 0, hyp: Hyp | None = None) -> tuple[list[Any], dict[str, Any]]:
    """The trainer ``extra_losses`` terms of ``config`` for ``student`` under ``teacher`` (neither is
    modified), checked before any training, and the report's ``details``: ``method``, for output KD the
    ``output_gains`` of its parts, for feature KD ``feature_layers`` and ``connectors`` (layer -> [student,
    teacher] channels; none where they match).

    ``imgsz``: the training size (it sizes the connectors' dry forward, compares strides and scales output
    KD's gains); ``seed``: the connectors' initial weights (the stage's seed, so that a run is reproducible);
    ``hyp``: the training hyperparameters, whose detection gains output KD takes (:func:`output_gains`).
    """
    terms: list[Any] = []
    details: dict[str, Any] = {"method": config.method}
    forward = TeacherForward(teacher)  # one teacher forward per batch for every term
    if config.method in ("output", "both"):
        check_output_compatible(student, teacher)
        gains = output_gains(student, hyp, imgsz)
        if gains is None:
            terms.append(OutputDistillation(forward, weight=config.weight))
        else:
            terms.append(OutputDistillation(forward, weight=config.weight, box=gains.box, obj=gains.obj,
                                            cls=gains.cls, balance=gains.balance))
            details["output_gains"] = {"box": gains.box, "obj": gains.obj, "cls": gains.cls,
                                       "balance": list(gains.balance)}
    if config.method in ("feature", "both"):
        feature = FeatureDistillation(forward, student, config.feature_layers, weight=config.feature_weight,
                                      tau=config.temperature, probe_size=imgsz, seed=seed)
        terms.append(feature)
        details["feature_layers"] = list(feature.feature_layers)
        details["connectors"] = {i: [int(m[0].in_channels), int(m[0].out_channels)]
                                 for i, m in feature.trainable.items()}
    return terms, details


def teacher_overhead(terms: Sequence[Any], history: Sequence[dict[str, Any]]) -> dict[str, float]:
    """The KD wall-time overhead of the epochs in ``history`` (those trained since ``terms`` were built):
    ``teacher_forward_s_per_epoch`` (the teacher forwards, each shared forward counted once) and
    ``teacher_forward_share`` (of the epochs' training time, ``time_s``); empty without a teacher or
    epochs."""
    forwards = {id(t.forward): t.forward for t in terms if isinstance(getattr(t, "forward", None), TeacherForward)}
    if not history or not forwards:
        return {}
    seconds = sum(f.seconds for f in forwards.values())
    train_s = sum(float(row.get("time_s", 0.0)) for row in history)
    return {"teacher_forward_s_per_epoch": seconds / len(history),
            "teacher_forward_share": seconds / train_s if train_s > 0 else float("nan")}


def kd_warnings(history: Sequence[dict[str, Any]]) -> list[str]:
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
            out.append(f"{key} was {100 * share:.2g}% of the detection loss in epoch 1: at this weight the "
                       "teacher has almost no effect (raise the weight)")
        elif share > KD_SHARE_WARN[1]:
            out.append(f"{key} was {share:.0f}x the detection loss in epoch 1: it drowns the labels "
                       "(lower the weight)")
    return out


__all__ = ["DistillConfig", "FROM_SCRATCH_METHOD", "KD_SHARE_WARN", "METHODS", "as_distill_config",
           "check_output_compatible", "default_method", "distill_json", "distill_terms", "kd_warnings",
           "output_gains", "teacher_overhead"]
