"""Output-level knowledge distillation for YOLO detectors: the teacher's head outputs as soft targets.

Every output of a YOLOv5 head goes through a sigmoid before decoding (xy, wh, objectness, class scores), so
each raw output is a logit and the teacher's sigmoid is a soft target for it: the loss is binary cross-entropy
with logits against ``sigmoid(teacher)``, whose gradient is ``sigmoid(student) - sigmoid(teacher)`` (it does
not vanish where the sigmoid saturates, as an MSE on probabilities would). Objectness is distilled in every
cell (background cells teach the student where there is nothing); boxes and classes only where the teacher
sees an object, weighted by its objectness, so the teacher's arbitrary outputs on background do not drown
the signal.

The term plugs into the trainer as an ``extra_losses`` entry (``Trainer(..., extra_losses=[kd])``); the
teacher runs in eval mode without gradients on the same (augmented) batch as the student.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from yolocompress.compress.distill.teacher import TeacherForward
from yolocompress.engine.loss import bernoulli_kl
from yolocompress.errors import InputError


class OutputDistillation:
    """Soft-target BCE between student and teacher head outputs (see the module docstring).

    Args:
        teacher: the reference detector (same head layout: levels, anchors and classes; copied, frozen, kept
            in eval mode), or a :class:`~yolocompress.compress.distill.teacher.TeacherForward` shared with
            other terms (one teacher forward per batch for all of them).
        weight: multiplier of the whole term.
        box, obj, cls: gains of the three parts. :func:`~yolocompress.compress.distill.config.distill_terms`
            passes the detection loss's own gains (:func:`~yolocompress.engine.loss.loss_gains`: YOLOv5
            scales them with the image size and class count, e.g. box 0.05, obj 0.16, cls 0.0375 at 256 px and
            6 classes), so that at ``weight`` 1 each part weighs what the labels' part weighs.
        balance: objectness weight per output level, finest first (the detection loss's; ``None``: 1 each).

    Each part is a KL divergence: the BCE against the soft targets minus their entropy (the same gradient),
    so it is 0 where the student agrees with the teacher and the logged value says how far apart they are.
    Called as ``term(batch, preds, features)`` it returns ``(loss per image, {"kd_output": value})``; the trainer
    multiplies it by the batch size like its detection loss. ``forward``: the shared teacher forward (its
    ``seconds``: the KD overhead so far); ``teacher``: the frozen teacher.
    """

    feature_layers: tuple[int, ...] = ()

    def __init__(self, teacher: nn.Module | TeacherForward, weight: float = 1.0, box: float = 1.0,
                 obj: float = 1.0, cls: float = 1.0, balance: Sequence[float] | None = None) -> None:
        if weight < 0 or min(box, obj, cls) < 0 or (balance is not None and min(balance) < 0):
            raise InputError("distillation weights must be >= 0")
        self.forward = teacher if isinstance(teacher, TeacherForward) else TeacherForward(teacher)
        self.weight, self.box, self.obj, self.cls = float(weight), float(box), float(obj), float(cls)
        self.balance = None if balance is None else tuple(float(b) for b in balance)

    @property
    def teacher(self) -> nn.Module:
        """The frozen teacher."""
        return self.forward.model

    def to(self, device: torch.device | str) -> "OutputDistillation":
        self.forward.to(device)
        return self

    def loss(self, student: list[Tensor], teacher: list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """``(box, obj, cls)`` KL parts summed over levels (objectness times the level's ``balance``), each a
        mean per cell (obj) or per unit of the teacher's objectness (box, cls); 0 where the student agrees."""
        if len(student) != len(teacher):
            raise ValueError(f"student has {len(student)} output levels, teacher {len(teacher)}")
        balance = self.balance or (1.0,) * len(student)
        if len(balance) < len(student):
            raise ValueError(f"{len(student)} output levels but {len(balance)} objectness weights")
        zero = student[0].new_zeros(())
        box, obj, cls = zero, zero, zero
        for level, (s, t) in enumerate(zip(student, teacher)):
            if s.shape != t.shape:
                raise ValueError(f"student output {tuple(s.shape)} != teacher output {tuple(t.shape)}")
            s, t = s.float(), t.float()
            kl = bernoulli_kl(s, t)
            obj = obj + kl[..., 4].mean() * balance[level]
            w = t[..., 4].sigmoid()
            norm = w.sum().clamp(min=1e-6)
            box = box + (kl[..., :4].mean(-1) * w).sum() / norm
            if s.shape[-1] > 5:
                cls = cls + (kl[..., 5:].mean(-1) * w).sum() / norm
        return box, obj, cls

    def __call__(self, batch: Any, preds: list[Tensor], features: dict[int, Tensor]
                 ) -> tuple[Tensor, dict[str, float]]:
        targets, _ = self.forward(batch.imgs)
        box, obj, cls = self.loss(preds, targets)
        total = self.weight * (self.box * box + self.obj * obj + self.cls * cls)
        return total, {"kd_output": float(total.detach())}


__all__ = ["OutputDistillation"]
