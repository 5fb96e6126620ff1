"""Registry of the module types a model config may name, and how each one's channel arguments work.

Replaces a hard-coded chain of ``if m in {...}`` sets: adding a block means adding one entry here.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Callable

import torch.nn as nn

from yolocompress.models import backbones, common, elan, rep
from yolocompress.models.detect import Detect


class ChannelRule(Enum):
    """How a layer's constructor arguments relate to channels."""

    CONV = "conv"            # args[0] is c2 (scaled by width_multiple); c1 is prepended
    CONV_REPEAT = "repeat"   # as CONV, and the depth repeat count is passed inside as args[2]
    CONCAT = "concat"        # output channels = sum of inputs
    DETECT = "detect"        # input channels of each level appended to args
    BATCHNORM = "batchnorm"  # args = [c1]
    PASS = "pass"            # output channels = input channels (Upsample, pooling, ...)


@dataclass(frozen=True)
class ModuleEntry:
    """A buildable module type."""

    name: str
    ctor: Callable[..., nn.Module]
    rule: ChannelRule


_REGISTRY: dict[str, ModuleEntry] = {}


def register_module(name: str, ctor: Callable[..., nn.Module], rule: ChannelRule, *aliases: str) -> None:
    """Make ``name`` (and aliases such as ``nn.Upsample``) usable in model configs."""
    entry = ModuleEntry(name, ctor, rule)
    for key in (name, *aliases):
        _REGISTRY[key] = entry


def lookup(name: str) -> ModuleEntry:
    """The entry for a config module name; ``KeyError`` when unknown."""
    return _REGISTRY[name]


def known_modules() -> list[str]:
    """All names a config may use."""
    return sorted(_REGISTRY)


for _name in ("Conv", "DWConv", "Focus", "Bottleneck", "GhostConv", "GhostBottleneck", "SPP", "SPPF",
              "SPPCSPC", "SPPCSPCTiny"):
    register_module(_name, getattr(common, _name), ChannelRule.CONV)
for _name in ("BottleneckCSP", "C3", "C3Ghost"):
    register_module(_name, getattr(common, _name), ChannelRule.CONV_REPEAT)
for _name in ("conv_bn_relu_maxpool", "Shuffle_Block", "conv_bn_hswish", "MobileNet_Block"):
    register_module(_name, getattr(backbones, _name), ChannelRule.CONV)
register_module("Concat", common.Concat, ChannelRule.CONCAT)
register_module("Detect", Detect, ChannelRule.DETECT)
register_module("Upsample", nn.Upsample, ChannelRule.PASS, "nn.Upsample")
register_module("MaxPool2d", nn.MaxPool2d, ChannelRule.PASS, "nn.MaxPool2d")
register_module("Identity", nn.Identity, ChannelRule.PASS, "nn.Identity")
register_module("BatchNorm2d", nn.BatchNorm2d, ChannelRule.BATCHNORM, "nn.BatchNorm2d")
# Re-parameterizable blocks (RepVGG / YOLOv7 RepConv) and YOLOv7's ELAN
register_module("RepConv", rep.RepConv, ChannelRule.CONV)
register_module("C3Rep", rep.C3Rep, ChannelRule.CONV_REPEAT)
register_module("ELAN", elan.ELAN, ChannelRule.CONV_REPEAT)
