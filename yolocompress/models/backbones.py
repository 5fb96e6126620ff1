"""Light-weight backbone blocks from the seed notes: ShuffleNetV2 and MobileNetV3-small for YOLOv5.

Class and attribute names follow the notes (``conv_bn_relu_maxpool``, ``Shuffle_Block``,
``conv_bn_hswish``, ``MobileNet_Block``) so configs and checkpoints written for them load unchanged.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from yolocompress.models.activations import h_sigmoid, h_swish
from yolocompress.models.common import batch_norm


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """Interleave channel groups: [N, g*c, H, W] -> view [N, g, c, H, W] -> transpose -> [N, c*g, H, W]."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class conv_bn_relu_maxpool(nn.Module):  # noqa: N801
    """ShuffleNetV2 stem: 3x3 stride-2 conv, BN, ReLU, 3x3 stride-2 max-pool (output at stride 4)."""

    def __init__(self, c1: int, c2: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(c1, c2, kernel_size=3, stride=2, padding=1, bias=False),
            batch_norm(c2),
            nn.ReLU(inplace=True),
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maxpool(self.conv(x))


def _depthwise(c: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(c, c, 3, stride, 1, bias=False, groups=c)


class Shuffle_Block(nn.Module):  # noqa: N801
    """ShuffleNetV2 unit. stride 1: split channels, transform one half, concat, shuffle.
    stride 2: both branches see the whole input (down-sampling), concat, shuffle."""

    def __init__(self, inp: int, oup: int, stride: int):
        super().__init__()
        if not 1 <= stride <= 3:
            raise ValueError(f"illegal stride {stride}")
        self.stride = stride
        branch = oup // 2
        if stride == 1 and inp != branch * 2:
            raise ValueError(f"Shuffle_Block with stride 1 needs inp == oup (got {inp}, {oup})")
        if stride > 1:
            self.branch1 = nn.Sequential(
                _depthwise(inp, stride),
                batch_norm(inp),
                nn.Conv2d(inp, branch, 1, 1, 0, bias=False),
                batch_norm(branch),
                nn.ReLU(inplace=True),
            )
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else branch, branch, 1, 1, 0, bias=False),
            batch_norm(branch),
            nn.ReLU(inplace=True),
            _depthwise(branch, stride),
            batch_norm(branch),
            nn.Conv2d(branch, branch, 1, 1, 0, bias=False),
            batch_norm(branch),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class SELayer(nn.Module):
    """Squeeze-and-excitation: global average pool, FC-ReLU-FC-hard-sigmoid, channel-wise scale."""

    def __init__(self, channel: int, reduction: int = 4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel),
            h_sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        y = self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)
        return x * y


class conv_bn_hswish(nn.Module):  # noqa: N801
    """MobileNetV3 stem: 3x3 conv (stride ``stride``), BN, h-swish."""

    def __init__(self, c1: int, c2: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, 3, stride, 1, bias=False)
        self.bn = batch_norm(c2)
        self.act = h_swish()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MobileNet_Block(nn.Module):  # noqa: N801
    """MobileNetV3 inverted residual: (1x1 expand) -> depth-wise kxk -> (SE) -> 1x1 project, identity add
    when stride 1 and inp == oup. ``use_se`` / ``use_hs`` are 0/1 flags (SE block; h-swish vs ReLU)."""

    def __init__(self, inp: int, oup: int, hidden_dim: int, kernel_size: int, stride: int, use_se: int, use_hs: int):
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"MobileNet_Block stride must be 1 or 2, got {stride}")
        self.identity = stride == 1 and inp == oup
        pad = (kernel_size - 1) // 2

        def act() -> nn.Module:
            return h_swish() if use_hs else nn.ReLU(inplace=True)

        se = SELayer(hidden_dim) if use_se else nn.Sequential()
        dw = nn.Conv2d(hidden_dim, hidden_dim, kernel_size, stride, pad, groups=hidden_dim, bias=False)
        if inp == hidden_dim:
            self.conv = nn.Sequential(
                dw, batch_norm(hidden_dim), act(), se,
                nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False), batch_norm(oup),
            )
        else:
            self.conv = nn.Sequential(
                nn.Conv2d(inp, hidden_dim, 1, 1, 0, bias=False), batch_norm(hidden_dim), act(),
                dw, batch_norm(hidden_dim), se, act(),
                nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False), batch_norm(oup),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.identity else y
