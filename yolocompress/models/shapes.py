"""Shape specs: the real size of every Conv2d / BatchNorm2d / Linear of a model, as plain data; parameter
totals.

A pruned model is stored as its config's layers plus this spec beside a plain state_dict; loading builds
the config and then resizes the modules the spec says differ. No pickled modules needed.
"""
from __future__ import annotations

from typing import Any

import torch.nn as nn


def num_params(module: nn.Module) -> int:
    """Parameter elements of ``module`` (each shared tensor once; buffers such as BN statistics not counted).
    ``profile.count_params`` adds the trainable and non-zero counts."""
    return int(sum(p.numel() for p in module.parameters()))


def refresh_layer_params(model: nn.Module) -> None:
    """Set each layer's ``np`` (its parameter count, an attribute Ultralytics layers carry) again after
    modules were replaced (fused, pruned, resized)."""
    for layer in getattr(model, "model", ()):
        if hasattr(layer, "np"):
            layer.np = num_params(layer)


def shape_spec(model: nn.Module) -> dict[str, dict[str, Any]]:
    """``{module_name: {"type": ..., sizes...}}`` for every Conv2d, BatchNorm2d and Linear."""
    spec: dict[str, dict[str, Any]] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            spec[name] = {"type": "Conv2d", "in": m.in_channels, "out": m.out_channels, "groups": m.groups}
        elif isinstance(m, nn.BatchNorm2d):
            spec[name] = {"type": "BatchNorm2d", "features": m.num_features}
        elif isinstance(m, nn.Linear):
            spec[name] = {"type": "Linear", "in": m.in_features, "out": m.out_features}
    return spec


def _resized(m: nn.Module, want: dict[str, Any]) -> nn.Module:
    if isinstance(m, nn.Conv2d):
        new = nn.Conv2d(want["in"], want["out"], m.kernel_size, m.stride, m.padding, m.dilation,
                        want["groups"], bias=m.bias is not None, padding_mode=m.padding_mode)
    elif isinstance(m, nn.BatchNorm2d):
        new = nn.BatchNorm2d(want["features"], eps=m.eps, momentum=m.momentum, affine=m.affine,
                             track_running_stats=m.track_running_stats)
    elif isinstance(m, nn.Linear):
        new = nn.Linear(want["in"], want["out"], bias=m.bias is not None)
    else:  # pragma: no cover - shape_spec only records the three types above
        raise TypeError(type(m))
    return new.to(next(m.parameters()).device) if any(True for _ in m.parameters()) else new


def apply_shape_spec(model: nn.Module, spec: dict[str, dict[str, Any]]) -> int:
    """Replace every module whose size differs from ``spec``; returns how many were replaced."""
    current = shape_spec(model)
    unknown = set(spec) - set(current)
    if unknown:
        raise ValueError(f"shape spec names modules the model lacks: {sorted(unknown)[:5]}")
    replaced = 0
    for name, want in spec.items():
        if current[name] == want:
            continue
        model.set_submodule(name, _resized(model.get_submodule(name), want), strict=True)
        replaced += 1
    refresh_layer_params(model)
    return replaced
