"""Activation functions of the YOLOv5 family and the per-model activation setting.

A model config may name its activation (``activation: nn.LeakyReLU(0.1)`` in Ultralytics YAML). We parse
that string without ``eval``: a name from a fixed table and literal arguments.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from yolocompress.errors import InputError


class h_sigmoid(nn.Module):  # noqa: N801 - name used by the MobileNetV3 configs
    """Hard sigmoid ``relu6(x + 3) / 6``."""

    def __init__(self, inplace: bool = True):
        super().__init__()
        self.relu = nn.ReLU6(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + 3) / 6


class h_swish(nn.Module):  # noqa: N801
    """Hard swish ``x * relu6(x + 3) / 6``."""

    def __init__(self, inplace: bool = True):
        super().__init__()
        self.sigmoid = h_sigmoid(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.sigmoid(x)


class FReLU(nn.Module):
    """Funnel activation ``max(x, BN(depthwise_conv(x)))`` (Ma et al. 2020)."""

    def __init__(self, c1: int, k: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(c1, c1, k, 1, k // 2, groups=c1, bias=False)
        self.bn = nn.BatchNorm2d(c1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.max(x, self.bn(self.conv(x)))


class AconC(nn.Module):
    """ACON-C ``(p1 - p2) * x * sigmoid(beta * (p1 - p2) * x) + p2 * x`` with learned per-channel p1, p2, beta."""

    def __init__(self, c1: int):
        super().__init__()
        self.p1 = nn.Parameter(torch.randn(1, c1, 1, 1))
        self.p2 = nn.Parameter(torch.randn(1, c1, 1, 1))
        self.beta = nn.Parameter(torch.ones(1, c1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dpx = (self.p1 - self.p2) * x
        return dpx * torch.sigmoid(self.beta * dpx) + self.p2 * x


class MetaAconC(nn.Module):
    """Meta-ACON-C: like ACON-C with beta predicted per sample by a small two-layer 1x1 conv net."""

    def __init__(self, c1: int, k: int = 1, s: int = 1, r: int = 16):
        super().__init__()
        c2 = max(r, c1 // r)
        self.p1 = nn.Parameter(torch.randn(1, c1, 1, 1))
        self.p2 = nn.Parameter(torch.randn(1, c1, 1, 1))
        self.fc1 = nn.Conv2d(c1, c2, k, s, bias=True)
        self.fc2 = nn.Conv2d(c2, c1, k, s, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean(dim=2, keepdims=True).mean(dim=3, keepdims=True)
        beta = torch.sigmoid(self.fc2(self.fc1(y)))
        dpx = (self.p1 - self.p2) * x
        return dpx * torch.sigmoid(beta * dpx) + self.p2 * x


class Mish(nn.Module):
    """Mish ``x * tanh(softplus(x))``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.mish(x)


# name -> (constructor, whether it takes the channel count as first argument)
_ACTIVATIONS: dict[str, tuple[Callable[..., nn.Module], bool]] = {
    "SiLU": (nn.SiLU, False),
    "ReLU": (nn.ReLU, False),
    "ReLU6": (nn.ReLU6, False),
    "LeakyReLU": (nn.LeakyReLU, False),
    "Hardswish": (nn.Hardswish, False),
    "Mish": (Mish, False),
    "FReLU": (FReLU, True),
    "AconC": (AconC, True),
    "MetaAconC": (MetaAconC, True),
    "Identity": (nn.Identity, False),
}

_SPEC_RE = re.compile(r"^\s*(?:nn\.)?([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$")


@dataclass(frozen=True)
class ActivationSpec:
    """A parsed activation setting: ``name`` from the table above and literal constructor arguments."""

    name: str = "SiLU"
    args: tuple[Any, ...] = ()
    kwargs: tuple[tuple[str, Any], ...] = field(default_factory=tuple)

    def build(self, channels: int) -> nn.Module:
        """A new activation module for a layer with ``channels`` output channels."""
        ctor, needs_channels = _ACTIVATIONS[self.name]
        kwargs = dict(self.kwargs)
        if ctor in (nn.SiLU, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish):
            kwargs.setdefault("inplace", True)
        return ctor(channels, *self.args, **kwargs) if needs_channels else ctor(*self.args, **kwargs)

    def __str__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs]
        return f"nn.{self.name}({', '.join(parts)})"


def parse_activation(spec: str | None) -> ActivationSpec:
    """Parse ``'nn.LeakyReLU(0.1)'``, ``'SiLU'`` or ``None`` (SiLU) without evaluating code."""
    if spec is None or spec == "":
        return ActivationSpec()
    match = _SPEC_RE.match(str(spec))
    if not match or match.group(1) not in _ACTIVATIONS:
        known = ", ".join(sorted(_ACTIVATIONS))
        raise InputError(f"unknown activation {spec!r} (known: {known})")
    name, arg_text = match.group(1), (match.group(2) or "").strip()
    args: list[Any] = []
    kwargs: list[tuple[str, Any]] = []
    if arg_text:
        try:
            call = ast.parse(f"f({arg_text})", mode="eval").body
            assert isinstance(call, ast.Call)
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = [(kw.arg, ast.literal_eval(kw.value)) for kw in call.keywords if kw.arg]
        except (SyntaxError, ValueError, AssertionError) as exc:
            raise InputError(f"activation arguments must be literals: {spec!r}") from exc
    kwargs = [(k, v) for k, v in kwargs if k != "inplace"]
    return ActivationSpec(name, tuple(args), tuple(kwargs))
