"""YOLOv7's ELAN block (efficient layer aggregation network, Wang et al. 2022), as one configurable module.

ELAN keeps every layer's shortest gradient path short: two 1x1 Convs split the input, a stack of ``n``
3x3 Convs grows from the second split, and the outputs of *all* of them are concatenated and mixed by a
1x1 transition Conv (one transition per block, not per layer)::

    x ──cv1(1x1)────────────────────────────────┐
    x ──cv2(1x1)──┬─ m[0](3x3) ─┬─ m[1](3x3) ─┬─ ...
                  │             │             │
    cat(cv1, cv2, m[0], ..., m[n-1]) ──cv3(1x1)── y

YOLOv7-tiny writes this as six config rows with ``n = 2``; one module with constructor arguments lets the
parser's width rule scale its channels, depth scaling change ``n``, and a pruner or fuser see named
sub-modules (``cv1`` ... ``m.1``) instead of loose layers whose from-indices shift when ``n`` changes.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from yolocompress.models.common import Conv


class ELAN(nn.Module):
    """ELAN block.

    Args:
        c1, c2: input / output channels.
        n: number of stacked ``k x k`` Convs (YOLOv7-tiny: 2).
        e: hidden width ``c_ = int(c2 * e)`` of every branch; the concat has ``(2 + n) * c_`` channels.
        k: kernel size of the stacked Convs.

    ``Tensor[B, c1, H, W] -> Tensor[B, c2, H, W]`` (stride 1).
    """

    def __init__(self, c1: int, c2: int, n: int = 2, e: float = 0.5, k: int = 3):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.m = nn.ModuleList(Conv(c_, c_, k, 1) for _ in range(n))
        self.cv3 = Conv((2 + n) * c_, c2, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = [self.cv1(x), self.cv2(x)]
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv3(torch.cat(y, 1))
