"""The teacher's forward pass, shared by every distillation term of one training run.

Output KD needs the teacher's head outputs, feature KD the outputs of some of its layers; both come from one
forward of the same batch. :class:`TeacherForward` runs it once per batch (the trainer calls each term with
the same batch object) and hands each term its part, so ``method: both`` costs one teacher forward per batch,
not two.
"""
from __future__ import annotations

import copy
import time
from typing import Iterable

import torch
from torch import Tensor, nn


class TeacherForward:
    """A frozen copy of ``teacher`` (float32, eval mode, no gradients) and its outputs on the latest batch.

    Args:
        teacher: the reference detector (not modified).
        layers: layer indices whose outputs are kept on every forward (more can be added with
            :meth:`capture` before training).
    Attributes:
        model: the frozen copy.
        seconds: the wall time of its forward passes so far (the KD overhead).
    """

    def __init__(self, teacher: nn.Module, layers: Iterable[int] = ()) -> None:
        self.model = copy.deepcopy(teacher).float().eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.seconds = 0.0
        self._layers: set[int] = set()
        self._captured: dict[int, Tensor] = {}
        self._images: Tensor | None = None
        self._version = -1
        self._outputs: list[Tensor] = []
        self.capture(layers)

    def capture(self, layers: Iterable[int]) -> None:
        """Also keep the outputs of ``layers`` (``model.model[i]``) on every forward."""
        for i in layers:
            if int(i) not in self._layers:
                self._layers.add(int(i))
                self.model.model[int(i)].register_forward_hook(
                    (lambda k: lambda _m, _inp, out: self._captured.__setitem__(k, out))(int(i)))

    def to(self, device: torch.device | str) -> "TeacherForward":
        self.model.to(device)
        self._images = None
        return self

    def __call__(self, images: Tensor) -> tuple[list[Tensor], dict[int, Tensor]]:
        """``(head's raw outputs per level, {layer: output})`` on ``images``; computed once per tensor."""
        if images is not self._images or images._version != self._version:  # a new batch, or changed in place
            start = time.perf_counter()
            self._captured = {}
            with torch.no_grad():
                out = self.model(images.float())
            self._outputs = list(out[1] if isinstance(out, tuple) else out)
            self._images, self._version = images, images._version
            self.seconds += time.perf_counter() - start
        return self._outputs, self._captured


__all__ = ["TeacherForward"]
