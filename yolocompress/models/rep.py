"""Re-parameterizable blocks (RepVGG, Ding et al. 2021; the RepConv of YOLOv6/YOLOv7).

A ``RepConv`` trains as three parallel branches whose outputs are summed before the activation::

    y = act( BN(conv_kxk(x)) + BN(conv_1x1(x)) + BN(x) )      # the identity BN only when c1 == c2, s == 1

and is deployed as one ``k x k`` convolution with a bias (``rbr_reparam``): every branch is linear, so each
branch's BN folds into its kernel, the 1x1 kernel is zero-padded to ``k x k`` (its tap is the centre tap), the
identity becomes a ``k x k`` kernel with a single 1 per output channel, and the kernels and biases add up.
The arithmetic lives in ``yolocompress.models.deploy``; this module only defines both structures.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from yolocompress.models.common import C3, Bottleneck, Conv, autopad, batch_norm


class RepConv(nn.Module):
    """3x3 (``k`` x ``k``) conv+BN, 1x1 conv+BN and optional identity BN, summed, then the activation.

    Args:
        c1, c2: input / output channels.
        k: kernel size of the main branch (odd).
        s: stride (applies to both convolution branches; the identity branch exists only for ``s == 1``).
        p: padding of the main branch (``None``: 'same', ``k // 2``); the 1x1 branch is padded ``p - k // 2``.
        g: groups (both convolution branches, and the identity kernel, are grouped alike).
        d: dilation of the main branch.
        act: ``True`` the model's default activation (SiLU unless the config names another, see
            ``uses_default_act``), ``False`` none, or a module.
        identity: add the identity BN branch when it is possible (``c1 == c2`` and ``s == 1``).

    Sub-modules (training form): ``rbr_dense`` (Conv, no activation), ``rbr_1x1`` (Conv, no activation),
    ``rbr_identity`` (BatchNorm2d or None), ``act``. Deploy form: ``rbr_reparam`` (Conv2d with bias), ``act``.
    """

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1, p: int | None = None, g: int = 1, d: int = 1,
                 act: bool | nn.Module = True, identity: bool = True):
        super().__init__()
        if k % 2 != 1:
            raise ValueError(f"RepConv needs an odd kernel size (the 1x1 branch is its centre tap), got {k}")
        p = autopad(k, p, d)
        if p - d * (k // 2) < 0:
            raise ValueError(f"RepConv padding {p} is smaller than the kernel's half-width {d * (k // 2)}")
        self.rbr_dense = Conv(c1, c2, k, s, p, g, d, act=False)
        self.rbr_1x1 = Conv(c1, c2, 1, s, p - d * (k // 2), g, act=False)
        self.register_module("rbr_identity", batch_norm(c1) if identity and c1 == c2 and s == 1 else None)
        self.register_module("rbr_reparam", None)
        self.uses_default_act = act is True
        self.act = nn.SiLU(inplace=True) if act is True else act if isinstance(act, nn.Module) else nn.Identity()

    @property
    def deployed(self) -> bool:
        """True once the branches were merged into ``rbr_reparam``."""
        return self.rbr_reparam is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rbr_reparam is not None:
            return self.act(self.rbr_reparam(x))
        y = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            y = y + self.rbr_identity(x)
        return self.act(y)


class RepBottleneck(Bottleneck):
    """YOLOv5 Bottleneck whose 3x3 Conv is a ``RepConv`` (with its identity branch when c_ == c2)."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, shortcut, g, e)
        self.cv2 = RepConv(int(c2 * e), c2, 3, 1, g=g)


class C3Rep(C3):
    """C3 whose Bottlenecks are ``RepBottleneck``s: every 3x3 convolution of the block is re-parameterizable."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(RepBottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))
