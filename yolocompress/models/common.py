"""Building blocks of the YOLOv5 family (v5.0 to v7.0).

Attribute names (``conv``, ``bn``, ``act``, ``cv1`` ...) match Ultralytics exactly so that checkpoint
tensors map one to one; the code is our own. Every BatchNorm is created with YOLOv5's ``eps=1e-3`` and
``momentum=0.03``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn

BN_EPS = 1e-3
BN_MOMENTUM = 0.03


def autopad(k: int | Sequence[int], p: int | Sequence[int] | None = None, d: int = 1):
    """'Same' padding for kernel ``k`` and dilation ``d`` when ``p`` is None."""
    if d > 1:
        k = d * (k - 1) + 1 if isinstance(k, int) else [d * (x - 1) + 1 for x in k]
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


def batch_norm(c: int) -> nn.BatchNorm2d:
    """BatchNorm2d with YOLOv5's eps and momentum."""
    return nn.BatchNorm2d(c, eps=BN_EPS, momentum=BN_MOMENTUM)


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> activation.

    ``act=True`` takes the model's default activation (SiLU unless the config names another; the model
    builder swaps it after construction, see ``uses_default_act``), ``False`` none, or a module.
    """

    def __init__(self, c1: int, c2: int, k=1, s=1, p=None, g: int = 1, d: int = 1, act: bool | nn.Module = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p, d), groups=g, dilation=d, bias=False)
        self.bn = batch_norm(c2)
        self.uses_default_act = act is True
        if act is True:
            self.act = nn.SiLU(inplace=True)
        elif isinstance(act, nn.Module):
            self.act = act
        else:
            self.act = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DWConv(Conv):
    """Depth-wise (grouped by gcd(c1, c2)) convolution."""

    def __init__(self, c1: int, c2: int, k=1, s=1, d: int = 1, act: bool | nn.Module = True):
        super().__init__(c1, c2, k, s, g=math.gcd(c1, c2), d=d, act=act)


class Focus(nn.Module):
    """Space-to-depth (2x2 pixel blocks to channels) followed by a Conv; the v5.0 stem."""

    def __init__(self, c1: int, c2: int, k=1, s=1, p=None, g: int = 1, act: bool | nn.Module = True):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat((x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]), 1))


class Bottleneck(nn.Module):
    """1x1 Conv -> 3x3 Conv, with a residual add when ``shortcut`` and c1 == c2."""

    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class BottleneckCSP(nn.Module):
    """CSP bottleneck (Wang et al. 2019): a Bottleneck stack on half the channels, a plain 1x1 on the other."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = nn.Conv2d(c1, c_, 1, 1, bias=False)
        self.cv3 = nn.Conv2d(c_, c_, 1, 1, bias=False)
        self.cv4 = Conv(2 * c_, c2, 1, 1)
        self.bn = batch_norm(2 * c_)
        self.act = nn.SiLU(inplace=True)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y1 = self.cv3(self.m(self.cv1(x)))
        y2 = self.cv2(x)
        return self.cv4(self.act(self.bn(torch.cat((y1, y2), 1))))


class C3(nn.Module):
    """CSP bottleneck with three Convs (the v4.0+ YOLOv5 block)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class GhostConv(nn.Module):
    """Ghost convolution (Han et al. 2020): half the outputs from a Conv, half from a cheap 5x5 depth-wise Conv."""

    def __init__(self, c1: int, c2: int, k=1, s=1, g: int = 1, act: bool | nn.Module = True):
        super().__init__()
        c_ = c2 // 2
        self.cv1 = Conv(c1, c_, k, s, None, g, act=act)
        self.cv2 = Conv(c_, c_, 5, 1, None, c_, act=act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv1(x)
        return torch.cat((y, self.cv2(y)), 1)


class GhostBottleneck(nn.Module):
    """Ghost bottleneck: GhostConv -> (depth-wise stride-2 Conv) -> GhostConv, plus a (projected) shortcut."""

    def __init__(self, c1: int, c2: int, k: int = 3, s: int = 1):
        super().__init__()
        c_ = c2 // 2
        self.conv = nn.Sequential(
            GhostConv(c1, c_, 1, 1),
            DWConv(c_, c_, k, s, act=False) if s == 2 else nn.Identity(),
            GhostConv(c_, c2, 1, 1, act=False),
        )
        self.shortcut = (
            nn.Sequential(DWConv(c1, c1, k, s, act=False), Conv(c1, c2, 1, 1, act=False)) if s == 2 else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.shortcut(x)


class C3Ghost(C3):
    """C3 whose Bottlenecks are GhostBottlenecks."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__(c1, c2, n, shortcut, g, e)
        c_ = int(c2 * e)
        self.m = nn.Sequential(*(GhostBottleneck(c_, c_) for _ in range(n)))


class SPP(nn.Module):
    """Spatial pyramid pooling: parallel max-pools of sizes ``k`` concatenated (v5.0 and earlier)."""

    def __init__(self, c1: int, c2: int, k: Sequence[int] = (5, 9, 13)):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * (len(k) + 1), c2, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv2(torch.cat([x] + [m(x) for m in self.m], 1))


class SPPF(nn.Module):
    """Fast SPP: three chained max-pools of size ``k`` (equal to SPP(k, 2k-1, 3k-2))."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class SPPCSPC(nn.Module):
    """YOLOv7's SPP in a CSP block: a pyramid-pooling branch and a 1x1 shortcut branch, concatenated.

    ``cv1 -> cv3(3x3) -> cv4 -> [x, pool5, pool9, pool13] -> cv5 -> cv6(3x3)`` beside ``cv2(x)``, then
    ``cv7`` over both; hidden width ``c_ = int(2 * c2 * e)``. ``Tensor[B, c1, H, W] -> Tensor[B, c2, H, W]``.
    """

    def __init__(self, c1: int, c2: int, k: Sequence[int] = (5, 9, 13), e: float = 0.5):
        super().__init__()
        c_ = int(2 * c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(c_, c_, 3, 1)
        self.cv4 = Conv(c_, c_, 1, 1)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=x, stride=1, padding=x // 2) for x in k)
        self.cv5 = Conv(c_ * (len(k) + 1), c_, 1, 1)
        self.cv6 = Conv(c_, c_, 3, 1)
        self.cv7 = Conv(2 * c_, c2, 1, 1)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The pyramid-pooling branch (before ``cv7``)."""
        x = self.cv4(self.cv3(self.cv1(x)))
        return self.cv6(self.cv5(torch.cat([x] + [m(x) for m in self.m], 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv7(torch.cat((self.pooled(x), self.cv2(x)), 1))


class SPPCSPCTiny(SPPCSPC):
    """YOLOv7-tiny's lighter SPPCSPC: the same two branches without the three inner convs (cv3, cv4, cv6)."""

    def __init__(self, c1: int, c2: int, k: Sequence[int] = (5, 9, 13), e: float = 0.5):
        super().__init__(c1, c2, k, e)
        del self.cv3, self.cv4, self.cv6

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        return self.cv5(torch.cat([x] + [m(x) for m in self.m], 1))


class Concat(nn.Module):
    """Concatenate a list of tensors along ``dimension``."""

    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat(x, self.d)
