"""SGD parameter groups, warm-up, the per-epoch learning-rate schedule and gradient accumulation (YOLOv5).

The optimizer has three parameter groups, in this order:
    0. biases (no weight decay) -- warm-up starts their learning rate high, at ``warmup_bias_lr``;
    1. other weights (weight decay);
    2. normalisation-layer weights (no weight decay).
Gradients are accumulated to a nominal batch of 64 images and weight decay is scaled to match.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from yolocompress.engine.loss import Hyp

NOMINAL_BATCH = 64
MIN_WARMUP_ITERS = 100
_NORM_TYPES = tuple(t for name, t in vars(nn).items() if "Norm" in name and isinstance(t, type))


def accumulate_steps(batch: int, nominal_batch: int = NOMINAL_BATCH) -> int:
    """Batches whose gradients are summed before one optimizer step (after warm-up)."""
    return max(round(nominal_batch / batch), 1)


def parameter_groups(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter], list[nn.Parameter]]:
    """Split trainable parameters into (biases, decayed weights, normalisation weights)."""
    biases, weights, norm_weights = [], [], []
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if name == "bias":
                biases.append(p)
            elif name == "weight" and isinstance(module, _NORM_TYPES):
                norm_weights.append(p)
            else:
                weights.append(p)
    return biases, weights, norm_weights


def build_optimizer(model: nn.Module, hyp: Hyp, batch: int, nominal_batch: int = NOMINAL_BATCH,
                    extra: nn.Module | None = None) -> torch.optim.SGD:
    """SGD (Nesterov) over the three parameter groups, plus two for ``extra``.

    Args:
        batch: images per optimizer micro-step across all processes (the global batch).
        extra: modules that train with the model but are not part of it (a feature-distillation term's
            connectors): their weights get a group of their own with weight decay, their biases and
            normalisation weights one without (groups 3 and 4).
    Weight decay is ``hyp.weight_decay * batch * accumulate / nominal_batch``: the decay per image seen
    stays that of the nominal batch whatever the batch actually is.
    """
    biases, weights, norm_weights = parameter_groups(model)
    decay = hyp.weight_decay * batch * accumulate_steps(batch, nominal_batch) / nominal_batch
    optimizer = torch.optim.SGD(
        [
            {"params": biases, "weight_decay": 0.0},
            {"params": weights, "weight_decay": decay},
            {"params": norm_weights, "weight_decay": 0.0},
        ],
        lr=hyp.lr0, momentum=hyp.momentum, nesterov=True,
    )
    if extra is not None and any(p.requires_grad for p in extra.parameters()):
        extra_biases, extra_weights, extra_norms = parameter_groups(extra)
        optimizer.add_param_group({"params": extra_weights, "weight_decay": decay})
        optimizer.add_param_group({"params": extra_biases + extra_norms, "weight_decay": 0.0})
    return optimizer


def lr_factor(epochs: int, lrf: float, cosine: bool = False) -> Callable[[float], float]:
    """The schedule: learning-rate multiplier of epoch ``e``, from 1 at epoch 0 to ``lrf`` at ``epochs``."""
    if cosine:
        return lambda e: ((1 - math.cos(e * math.pi / epochs)) / 2) * (lrf - 1) + 1
    return lambda e: (1 - e / epochs) * (1.0 - lrf) + lrf


@dataclass
class Schedule:
    """Learning rate, momentum and accumulation for every iteration of a run.

    Args:
        hyp: ``lr0``, ``lrf``, ``momentum``, ``warmup_*``.
        epochs: total epochs of the run.
        iters_per_epoch: batches per epoch (on one process).
        batch: global batch size (images per micro-step over all processes).
        cosine: cosine instead of linear decay.
    """

    hyp: Hyp
    epochs: int
    iters_per_epoch: int
    batch: int
    cosine: bool = False
    nominal_batch: int = NOMINAL_BATCH

    def __post_init__(self) -> None:
        self.factor = lr_factor(self.epochs, self.hyp.lrf, self.cosine)
        self.warmup_iters = (max(round(self.hyp.warmup_epochs * self.iters_per_epoch), MIN_WARMUP_ITERS)
                             if self.hyp.warmup_epochs > 0 else 0)
        self.accumulate = accumulate_steps(self.batch, self.nominal_batch)

    def epoch_lr(self, epoch: int) -> float:
        return self.hyp.lr0 * self.factor(epoch)

    def start_epoch(self, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        """Set every group's learning rate to the schedule's value for ``epoch``."""
        for group in optimizer.param_groups:
            group["lr"] = self.epoch_lr(epoch)

    def in_warmup(self, iteration: int) -> bool:
        return iteration <= self.warmup_iters and self.warmup_iters > 0

    def warmup(self, optimizer: torch.optim.Optimizer, iteration: int, epoch: int) -> None:
        """Warm-up step ``iteration`` (counted from the start of training): interpolate lr and momentum.

        The bias group (0) comes down from ``warmup_bias_lr``, the others come up from 0, all to the
        scheduled rate of ``epoch``; momentum rises from ``warmup_momentum`` to ``momentum``.
        """
        if not self.in_warmup(iteration):
            return
        xi = (0, self.warmup_iters)
        target = self.epoch_lr(epoch)
        for j, group in enumerate(optimizer.param_groups):
            start = self.hyp.warmup_bias_lr if j == 0 else 0.0
            group["lr"] = float(np.interp(iteration, xi, (start, target)))
            if "momentum" in group:
                group["momentum"] = float(np.interp(iteration, xi, (self.hyp.warmup_momentum, self.hyp.momentum)))

    def accumulate_at(self, iteration: int) -> int:
        """Batches per optimizer step at ``iteration``: ramps from 1 to the nominal value during warm-up."""
        if not self.in_warmup(iteration):
            return self.accumulate
        ramp = np.interp(iteration, (0, self.warmup_iters), (1, self.nominal_batch / self.batch))
        return max(1, int(np.round(ramp)))
