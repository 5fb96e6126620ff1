"""Exponential moving average of a model's weights (YOLOv5's ModelEMA), evaluated and saved in its place."""
from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a ``DataParallel`` / ``DistributedDataParallel`` wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)) else model


class ModelEMA:
    """Keep ``ema = d * ema + (1 - d) * model`` over every floating-point entry of the state dict.

    The decay ramps up as ``d = decay * (1 - exp(-updates / tau))`` so that early, fast-changing weights
    are not frozen in. Floating-point buffers (BatchNorm running statistics) are averaged like weights;
    the others (``num_batches_tracked``) are copied.

    Args:
        model: the model being trained (a DDP wrapper is unwrapped); it is deep-copied.
        decay: the asymptotic decay.
        tau: the ramp's time constant, in updates.
        updates: updates already made (when resuming).
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000, updates: int = 0) -> None:
        self.ema = copy.deepcopy(unwrap(model)).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-self.updates / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average one step towards ``model``'s current state."""
        self.updates += 1
        d = self.current_decay()
        source = unwrap(model).state_dict()
        for name, value in self.ema.state_dict().items():
            if value.dtype.is_floating_point:
                value.mul_(d).add_(source[name].detach().to(value.dtype), alpha=1 - d)
            else:
                value.copy_(source[name])

    def state_dict(self) -> dict[str, Any]:
        """Plain data for a checkpoint (loadable with ``torch.load(weights_only=True)``)."""
        return {"state_dict": self.ema.state_dict(), "updates": self.updates, "decay": self.decay, "tau": self.tau}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ema.load_state_dict(state["state_dict"])
        self.updates = int(state["updates"])
        self.decay, self.tau = float(state["decay"]), float(state["tau"])
