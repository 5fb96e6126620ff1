"""Parameter counts of a model."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ParamCount:
    """Numbers of parameter elements (not tensors); buffers such as BN running stats are not counted.

    Attributes:
        total: every parameter element (shared parameters counted once).
        trainable: elements of parameters with ``requires_grad``.
        nonzero: elements that are not exactly zero (what unstructured sparsity removes).
    """

    total: int
    trainable: int
    nonzero: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def count_params(model: nn.Module) -> ParamCount:
    """Count the parameter elements of ``model`` (each shared parameter once)."""
    total = trainable = nonzero = 0
    with torch.no_grad():
        for p in model.parameters():  # parameters() yields each shared tensor once
            n = p.numel()
            total += n
            if p.requires_grad:
                trainable += n
            nonzero += int(torch.count_nonzero(p))
    return ParamCount(total=total, trainable=trainable, nonzero=nonzero)
