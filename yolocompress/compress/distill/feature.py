"""Feature-level knowledge distillation: channel-wise distillation (CWD) of the neck outputs, with connectors.

CWD (Shu et al., "Channel-wise Knowledge Distillation for Dense Prediction", ICCV 2021) turns every channel
of a feature map into a distribution over its ``H x W`` positions (a softmax at temperature ``tau``) and
makes the student's match the teacher's with the KL divergence, scaled by ``tau^2``:

    loss = tau^2 / (N C) * sum_{n, c} sum_{hw} p_t(hw) * (log p_t(hw) - log p_s(hw)),
    p = softmax(feature[n, c].flatten() / tau)

It asks where each channel activates, not how strongly, so student and teacher scales need not agree. Where
the student has other channel counts than the teacher (a pruned student, yolov5n under yolov5s) a
*connector*, a 1x1 convolution + BatchNorm per layer, maps the student's channels to the teacher's; the
connectors train with the student (the trainer puts them into its optimizer: this term's ``trainable``) and
are not part of the student, so a saved student never holds them. Spatial sizes must agree (same strides).

By default (``layers=None``) the layers are the ones that feed Detect (the neck outputs, P3-P5).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolocompress.compress.distill.teacher import TeacherForward
from yolocompress.errors import InputError
from yolocompress.models.inputs import max_stride


# The defaults of feature KD, measured on a pruned student (``DistillConfig``'s docstring): one place for
# ``FeatureDistillation`` and ``DistillConfig``.
DEFAULT_WEIGHT = 0.01
DEFAULT_TEMPERATURE = 0.5


def cwd_loss(student: Tensor, teacher: Tensor, tau: float = 1.0) -> Tensor:
    """CWD between two ``[N, C, H, W]`` feature maps of one shape (see the module docstring); a scalar."""
    if student.shape != teacher.shape:
        raise ValueError(f"CWD needs one shape, got student {tuple(student.shape)} and teacher {tuple(teacher.shape)}")
    s = student.float().flatten(2) / tau
    t = teacher.float().flatten(2) / tau
    log_p_t = F.log_softmax(t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - F.log_softmax(s, dim=-1))).sum(-1)  # [N, C]
    return kl.mean() * tau ** 2


def detect_inputs(model: nn.Module) -> list[int]:
    """Indices of the layers whose outputs Detect reads (the neck outputs)."""
    detect = model.model[-1]
    return [int(i) % len(model.model) for i in (detect.f if isinstance(detect.f, (list, tuple)) else [detect.f])]


def check_feature_layers(model: nn.Module, layers: Sequence[int], who: str = "student") -> None:
    """Refuse (one line, exit 2) indices that are not layers of ``model`` before Detect."""
    bad = [i for i in layers if not 0 <= int(i) < len(model.model) - 1]
    if bad:
        raise InputError(f"feature layers {bad} are not layers of the {who} (0..{len(model.model) - 2})")


def _features(model: nn.Module, layers: Sequence[int], images: Tensor) -> dict[int, Tensor]:
    """Outputs of ``model.model[i]`` for ``i in layers`` on one forward of ``images``."""
    captured: dict[int, Tensor] = {}
    handles = [model.model[i].register_forward_hook(
        (lambda k: lambda _m, _inp, out: captured.__setitem__(k, out))(i)) for i in layers]
    try:
        model(images)
    finally:
        for h in handles:
            h.remove()
    return captured


class FeatureDistillation:
    """CWD of ``layers`` from ``teacher`` into the student, as a trainer ``extra_losses`` term.

    Args:
        teacher: the reference detector (copied, frozen, eval mode), or a
            :class:`~yolocompress.compress.distill.teacher.TeacherForward` shared with other terms.
        student: the model to be trained (read once, to size the connectors; not kept).
        layers: layer indices, the same in both models (``None``: the layers feeding Detect).
        weight: multiplier of the term (the default is ``DistillConfig``'s, measured: see its docstring).
        tau: softmax temperature (the default is ``DistillConfig``'s).
        probe_size: image side (pixels) of the dry forward that sizes the connectors and checks strides.
        seed: the connectors' initial weights (drawn from their own generator, not the process's: torch
            seeds that at random per process, so two runs of the same command would start apart).
    Attributes:
        feature_layers: the student layers the trainer captures for it.
        trainable: the connectors (``nn.ModuleDict``, empty when every channel count matches).
        forward: the shared teacher forward (its ``seconds``: the KD overhead so far); ``teacher``: the
            frozen teacher.
    """

    def __init__(self, teacher: nn.Module | TeacherForward, student: nn.Module, layers: Sequence[int] | None = None,
                 weight: float = DEFAULT_WEIGHT, tau: float = DEFAULT_TEMPERATURE,
                 probe_size: int | None = None, seed: int = 0) -> None:
        if weight < 0 or not tau > 0:
            raise InputError(f"feature distillation needs weight >= 0 and temperature > 0, got {weight}, {tau}")
        self.forward = teacher if isinstance(teacher, TeacherForward) else TeacherForward(teacher)
        chosen = detect_inputs(student) if layers is None else [int(i) for i in layers]
        for model, who in ((student, "student"), (self.teacher, "teacher")):
            check_feature_layers(model, chosen, who)
        self.feature_layers = tuple(chosen)
        self.forward.capture(chosen)
        self.weight, self.tau = float(weight), float(tau)
        size = probe_size or 2 * max_stride(student)
        x = torch.zeros(1, 3, size, size)
        was = student.training
        student.eval()
        with torch.no_grad():
            s_feats, t_feats = _features(student, chosen, x), _features(self.teacher, chosen, x)
        student.train(was)
        connectors = {}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for i in chosen:
                s, t = s_feats[i], t_feats[i]
                if s.shape[-2:] != t.shape[-2:]:
                    raise InputError(f"feature layer {i}: the student's output is {tuple(s.shape[-2:])} and "
                                     f"the teacher's {tuple(t.shape[-2:])} at {size} px; distill layers of "
                                     "the same stride")
                if s.shape[1] != t.shape[1]:
                    connectors[str(i)] = nn.Sequential(nn.Conv2d(s.shape[1], t.shape[1], 1, bias=False),
                                                       nn.BatchNorm2d(t.shape[1]))
        self.trainable = nn.ModuleDict(connectors)

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher."""
        return self.forward.model

    def to(self, device: torch.device | str) -> "FeatureDistillation":
        self.forward.to(device)
        self.trainable.to(device)
        return self

    def __call__(self, batch: Any, preds: list[Tensor], features: dict[int, Tensor]
                 ) -> tuple[Tensor, dict[str, float]]:
        _, targets = self.forward(batch.imgs)
        total = preds[0].new_zeros(())
        for i in self.feature_layers:
            s = features[i]
            connector = self.trainable[str(i)] if str(i) in self.trainable else None
            total = total + cwd_loss(connector(s) if connector is not None else s, targets[i], self.tau)
        total = self.weight * total / len(self.feature_layers)
        return total, {"kd_feature": float(total.detach())}


__all__ = ["FeatureDistillation", "check_feature_layers", "cwd_loss", "detect_inputs"]
